"""Load and per-call cost: the manager's ``request()`` beside the clients users pick.

    python -m tests.benchmarks.load [--quick]

Every contender runs in a fresh client process of its own (its CPU time is the client's
alone, and no pool outlives it) against the emulator served from another process
(:mod:`.serve`), which answers ``POST /api/balance`` with 88Pay's three headers checked.

- **load**: 1,000 asyncio tasks, or 64 threads, each calling in a loop for a fixed time:
  two rounds of 5 s per contender, the contenders taking turns, each round a fresh client
  process (one round of 3 s with ``--quick``). Figures, over the rounds: calls answered per second, errors, client CPU per
  call, connections the client opened (ours: its pool's count; every contender: the peak of
  established connections to the emulator, sampled from ``/proc/net/tcp`` every 0.2 s), and
  connections ours opened after the first second (handshakes after warm-up).
- **per call**: one caller, calls in sequence on a kept-alive connection; wall and client
  CPU per call, medians of interleaved rounds.

Contenders: ours at the default cap (10), ours with the cap lifted (``max_connections`` of
a million: the unbounded behaviour before issue 15), ``requests.Session`` and
``httpx.Client`` with this library's auth (threads), ``aiohttp.ClientSession`` with the
token's headers and ``httpx.AsyncClient`` with this library's auth (asyncio), and the raw
clients the per-call yardstick uses (urllib3, a minimal h11 exchange).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from eightyeightpay import AsyncTokenManager, TokenManager
from eightyeightpay.plugins.sandbox import DEFAULT_API_KEY, DEFAULT_MERCHANT_ID

from .common import Figures, rotations
from .overhead import PATH, ungoverned
from .serve import emulator_process

UNCAPPED = 1_000_000
THREADS = 64
TASKS = 1000

THREADED = ("eightyeightpay", "eightyeightpay, cap lifted", "requests + auth", "httpx + auth")
ASYNCIO = ("eightyeightpay", "eightyeightpay, cap lifted", "aiohttp", "httpx async + auth")
PER_CALL_THREADED = ("eightyeightpay", "requests + auth", "httpx + auth", "raw urllib3")
PER_CALL_ASYNCIO = ("eightyeightpay", "aiohttp", "httpx async + auth", "raw h11")


def _established(port: int) -> int:
    """Established TCP connections to ``port`` on loopback, from the client side."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table, encoding="ascii") as lines:
                next(lines)
                for line in lines:
                    fields = line.split()
                    if fields[3] == "01" and int(fields[2].rsplit(":", 1)[1], 16) == port:
                        count += 1
        except FileNotFoundError:
            continue
    return count


class _Peak:
    """Samples established connections to the emulator every 0.2 s in a thread."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self.peak = max(self.peak, _established(self.port))

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def _ours_threaded(emulator: dict[str, Any], cap: int) -> TokenManager:
    from eightyeightpay.plugins.urllib3_transport import Urllib3Transport

    transport = Urllib3Transport(ca_bundle=emulator["ca_file"], max_connections=cap)
    return TokenManager(
        DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, transport=transport, **ungoverned(emulator["url"])
    )


def _threaded_call(name: str, emulator: dict[str, Any]) -> tuple[Callable[[], object], Any]:
    """A function making one call the way ``name`` does, and what to close afterwards."""
    if name in ("eightyeightpay", "eightyeightpay, cap lifted"):
        manager = _ours_threaded(emulator, 10 if name == "eightyeightpay" else UNCAPPED)
        return (lambda: manager.request("POST", PATH).json), manager
    manager = _ours_threaded(emulator, 10)
    url = emulator["url"] + PATH
    if name == "requests + auth":
        import requests

        from eightyeightpay import EightyEightPayRequestsAuth

        session = requests.Session()
        session.auth = EightyEightPayRequestsAuth(manager)
        ca_file = emulator["ca_file"]  # per call: a Session's own verify is not used for it
        return (lambda: session.post(url, verify=ca_file).json()), session
    if name == "httpx + auth":
        import httpx

        from eightyeightpay import EightyEightPayAuth

        client = httpx.Client(auth=EightyEightPayAuth(manager), verify=emulator["ca_file"])
        return (lambda: client.post(url).json()), client
    if name == "raw urllib3":
        import urllib3

        token = manager.get_token()
        headers = dict(token.auth_headers()) | {"Content-Type": "application/json"}
        pool = urllib3.PoolManager(ca_certs=emulator["ca_file"], retries=False)
        return (lambda: json.loads(pool.request("POST", url, headers=headers).data)), pool
    raise ValueError(name)


def _close(thing: Any) -> None:
    closer = getattr(thing, "close", None) or getattr(thing, "clear", None)
    if closer is not None:
        closer()


def _threaded_load(name: str, emulator: dict[str, Any], seconds: float) -> Figures:
    call, owner = _threaded_call(name, emulator)
    call()  # the token, and one connection
    calls = 0
    errors: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()
    stop = time.monotonic() + seconds
    barrier = threading.Barrier(THREADS + 1)

    def worker() -> None:
        nonlocal calls
        done = 0
        failed: collections.Counter[str] = collections.Counter()
        barrier.wait()
        while time.monotonic() < stop:
            try:
                call()
                done += 1
            except Exception as error:
                failed[_kind(error)] += 1
        with lock:
            calls += done
            errors.update(failed)

    threads = [threading.Thread(target=worker) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    peak = _Peak(emulator["port"])
    cpu, wall = time.process_time(), time.perf_counter()
    barrier.wait()
    time.sleep(min(1.0, seconds / 3))
    opened_warm = _opened(owner)
    for thread in threads:
        thread.join()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    figures = _load_figures(calls, errors, wall, cpu, peak.stop(), _opened(owner), opened_warm)
    _close(owner)
    return figures


def _opened(owner: Any) -> int | None:
    transport = getattr(owner, "_transport", None)
    stats = getattr(transport, "pool_stats", None)
    if stats is None:
        return None
    return int(sum(pool.opened for pool in stats().values()))


def _kind(error: Exception) -> str:
    """An error's kind for the figures: its module and class (never its message)."""
    return f"{type(error).__module__}.{type(error).__qualname__}"


def _load_figures(
    calls: int,
    errors: collections.Counter[str],
    wall: float,
    cpu: float,
    peak: int,
    opened: int | None,
    opened_warm: int | None,
) -> Figures:
    """One round's counts, in one client process (summed over rounds by :func:`_combined`).

    ``errors``: the calls that raised, by the error's kind.
    """
    return {
        "calls": calls,
        "errors": sum(errors.values()),
        "error_kinds": dict(errors),
        "wall_seconds": wall,
        "client_cpu_seconds": cpu,
        "peak_connections": peak,
        "connections_opened": opened,
        "opened_after_warm_up": None if opened is None else opened - (opened_warm or 0),
    }


def _combined(rounds: list[Figures]) -> Figures:
    """A contender's rounds as one figure: calls over the wall time of all its rounds.

    Each round was a fresh client process: connections opened are the most any round
    opened, those opened after warm-up the sum over the rounds.
    """
    calls = sum(r["calls"] for r in rounds)
    wall = sum(r["wall_seconds"] for r in rounds)
    opened = [r["connections_opened"] for r in rounds]
    after = [r["opened_after_warm_up"] for r in rounds]
    return {
        "calls": calls,
        "errors": sum(r["errors"] for r in rounds),
        "error_kinds": dict(
            sum(
                (collections.Counter(r["error_kinds"]) for r in rounds), start=collections.Counter()
            )
        ),
        "calls_per_second": calls / wall,
        "client_cpu_us_per_call": sum(r["client_cpu_seconds"] for r in rounds)
        / max(calls, 1)
        * 1e6,
        "peak_connections": max(r["peak_connections"] for r in rounds),
        "connections_opened": None if None in opened else max(opened),
        "opened_after_warm_up": None if None in after else sum(after),
        "rounds": len(rounds),
    }


async def _async_call(
    name: str, emulator: dict[str, Any]
) -> tuple[Callable[[], Awaitable[object]], Callable[[], Awaitable[None]], Any]:
    """One call the way ``name`` makes it, a closer, and the manager."""
    from eightyeightpay.plugins.h11_transport import AsyncHttp11Transport
    from eightyeightpay.plugins.runtimes import AsyncioRuntime

    cap = UNCAPPED if name == "eightyeightpay, cap lifted" else 10
    transport = AsyncHttp11Transport(
        AsyncioRuntime(), ca_bundle=emulator["ca_file"], max_connections=cap
    )
    manager = AsyncTokenManager(
        DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, transport=transport, **ungoverned(emulator["url"])
    )
    url = emulator["url"] + PATH
    if name.startswith("eightyeightpay"):

        async def ours() -> object:
            return (await manager.request("POST", PATH)).json

        return ours, manager.aclose, manager
    if name == "aiohttp":
        import ssl

        import aiohttp

        context = ssl.create_default_context(cafile=emulator["ca_file"])
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context))

        async def with_aiohttp() -> object:
            token = await manager.get_token()
            headers = dict(token.auth_headers()) | {"Content-Type": "application/json"}
            async with session.post(url, headers=headers) as response:
                return await response.json()

        async def close_aiohttp() -> None:
            await session.close()
            await manager.aclose()

        return with_aiohttp, close_aiohttp, manager
    if name == "httpx async + auth":
        import httpx

        from eightyeightpay import EightyEightPayAuth

        client = httpx.AsyncClient(auth=EightyEightPayAuth(manager), verify=emulator["ca_file"])

        async def with_httpx() -> object:
            return (await client.post(url)).json()

        async def close_httpx() -> None:
            await client.aclose()
            await manager.aclose()

        return with_httpx, close_httpx, manager
    if name == "raw h11":
        from .baseline import H11Client

        client_h11 = H11Client("asyncio", "127.0.0.1", emulator["port"], emulator["ca_file"])
        token = await manager.get_token()
        headers = [*token.auth_headers(), ("Content-Type", "application/json")]

        async def with_h11() -> object:
            _, body = await client_h11.post(PATH, headers, b"")
            return json.loads(body)

        async def close_h11() -> None:
            await client_h11.aclose()
            await manager.aclose()

        return with_h11, close_h11, manager
    raise ValueError(name)


async def _asyncio_load(name: str, emulator: dict[str, Any], seconds: float) -> Figures:
    call, close, manager = await _async_call(name, emulator)
    await call()
    calls = 0
    errors: collections.Counter[str] = collections.Counter()
    stop = time.monotonic() + seconds

    async def worker() -> None:
        nonlocal calls
        while time.monotonic() < stop:
            try:
                await call()
                calls += 1
            except Exception as error:
                errors[_kind(error)] += 1

    peak = _Peak(emulator["port"])
    cpu, wall = time.process_time(), time.perf_counter()
    tasks = [asyncio.create_task(worker()) for _ in range(TASKS)]
    await asyncio.sleep(min(1.0, seconds / 3))
    own = name.startswith("eightyeightpay")
    opened_warm = _opened(manager) if own else None
    await asyncio.gather(*tasks)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    opened = _opened(manager) if own else None
    figures = _load_figures(calls, errors, wall, cpu, peak.stop(), opened, opened_warm)
    await close()
    return figures


def _per_call_threaded(
    names: tuple[str, ...], emulator: dict[str, Any], rounds: int, calls: int
) -> Figures:
    contenders = {name: _threaded_call(name, emulator) for name in names}
    for call, _ in contenders.values():
        call()
    timings = _PerCall(names, calls)
    for order in rotations(names, rounds):
        for name in order:
            call = contenders[name][0]
            with timings.timed(name):
                for _ in range(calls):
                    call()
    for _, owner in contenders.values():
        _close(owner)
    return timings.medians()


async def _per_call_asyncio(
    names: tuple[str, ...], emulator: dict[str, Any], rounds: int, calls: int
) -> Figures:
    contenders = {name: await _async_call(name, emulator) for name in names}
    for call, _, _ in contenders.values():
        await call()
    timings = _PerCall(names, calls)
    for order in rotations(names, rounds):
        for name in order:
            call = contenders[name][0]
            with timings.timed(name):
                for _ in range(calls):
                    await call()
    for _, close, _ in contenders.values():
        await close()
    return timings.medians()


class _PerCall:
    """Wall and CPU time per call of contenders timed in turns of ``calls`` calls each."""

    def __init__(self, names: tuple[str, ...], calls: int) -> None:
        self.calls = calls
        self.samples: dict[str, list[tuple[float, float]]] = {name: [] for name in names}

    @contextlib.contextmanager
    def timed(self, name: str) -> Iterator[None]:
        """Record the block's wall and CPU time, per call, as one sample of ``name``."""
        cpu, wall = time.process_time(), time.perf_counter()
        yield
        self.samples[name].append(
            ((time.perf_counter() - wall) / self.calls, (time.process_time() - cpu) / self.calls)
        )

    def medians(self) -> Figures:
        """Each contender's median per-call wall and CPU time, in microseconds."""
        return {
            name: {
                "us_per_call": statistics.median(w for w, _ in values) * 1e6,
                "client_cpu_us_per_call": statistics.median(c for _, c in values) * 1e6,
                "rounds": len(values),
            }
            for name, values in self.samples.items()
        }


def _child(kind: str, name: str, emulator: dict[str, Any], quick: bool) -> Figures:
    """Run one measurement in a fresh interpreter; return its figures."""
    command = [sys.executable, "-m", "tests.benchmarks.load", "--child", kind, name]
    command += ["--emulator", json.dumps(emulator)] + (["--quick"] if quick else [])
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{kind} {name} failed:\n{result.stderr[-2000:]}")
    figures: Figures = json.loads(result.stdout.splitlines()[-1])
    return figures


def _sizes(quick: bool) -> tuple[float, int, int]:
    """Load seconds per round, per-call rounds, calls per round."""
    return (3.0, 5, 50) if quick else (5.0, 15, 200)


def _load_rounds(quick: bool) -> int:
    """Load rounds per contender, interleaved (quick: one)."""
    return 1 if quick else 2


def _run_child(kind: str, name: str, emulator: dict[str, Any], quick: bool) -> Figures:
    seconds, rounds, calls = _sizes(quick)
    if kind == "threads-load":
        return _threaded_load(name, emulator, seconds)
    if kind == "asyncio-load":
        return asyncio.run(_asyncio_load(name, emulator, seconds))
    if kind == "threads-per-call":
        return _per_call_threaded(PER_CALL_THREADED, emulator, rounds, calls)
    if kind == "asyncio-per-call":
        return asyncio.run(_per_call_asyncio(PER_CALL_ASYNCIO, emulator, rounds, calls))
    raise ValueError(kind)


def _interleaved_load(
    kind: str, names: tuple[str, ...], emulator: dict[str, Any], quick: bool
) -> Figures:
    """Each contender's load rounds, the contenders taking turns, so that a slower stretch
    of the machine (it is shared with the emulator, and a virtual one) falls on all alike."""
    rounds: dict[str, list[Figures]] = {name: [] for name in names}
    for order in rotations(names, _load_rounds(quick)):
        for name in order:
            rounds[name].append(_child(kind, name, emulator, quick))
    return {name: _combined(rounds[name]) for name in names}


def run(quick: bool) -> Figures:
    """Every contender, each in its own client process, against one emulator process."""
    with emulator_process() as emulator:
        figures: Figures = {
            "per_call": {
                "threads": _child("threads-per-call", "", emulator, quick),
                "asyncio": _child("asyncio-per-call", "", emulator, quick),
            },
            "load": {
                "threads": _interleaved_load("threads-load", THREADED, emulator, quick),
                "asyncio": _interleaved_load("asyncio-load", ASYNCIO, emulator, quick),
            },
        }
    seconds, rounds, calls = _sizes(quick)
    figures["sizes"] = {
        "load_seconds": seconds * _load_rounds(quick),
        "load_rounds": _load_rounds(quick),
        "threads": THREADS,
        "tasks": TASKS,
        "per_call_rounds": rounds,
        "per_call_calls_per_round": calls,
    }
    return figures


def main(argv: list[str] | None = None) -> None:
    """Run everything (or, with ``--child``, one measurement) and print JSON."""
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks.load")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--child", nargs=2, metavar=("KIND", "NAME"))
    parser.add_argument("--emulator")
    args = parser.parse_args(argv)
    if args.child:
        kind, name = args.child
        print(json.dumps(_run_child(kind, name, json.loads(args.emulator), args.quick)))
        return
    print(json.dumps(run(args.quick), indent=2))


if __name__ == "__main__":
    main()
