"""``eightyeightpay demo``: the library's main job, shown against the embedded emulator.

No configuration and no network: an HTTPS emulator with a throw-away CA on loopback, then
the threaded manager doing what it is for, with the emulator's own counts as evidence.
"""

from __future__ import annotations

import itertools
import random
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from eightyeightpay.api import ApiResponse
from eightyeightpay.errors import EightyEightPayError, RateLimited
from eightyeightpay.plugins.memory import MemoryStore
from eightyeightpay.plugins.sandbox import (
    DEFAULT_API_KEY,
    DEFAULT_MERCHANT_ID,
    FakeClock,
    Fault,
    Sandbox,
    SandboxServer,
    SandboxTransport,
)
from eightyeightpay.tokens import Token

from .sync import ManualBackground, TokenManager

__all__ = ["run_demo"]

Say = Callable[[str], None]


def _table(say: Say, rows: list[tuple[str, object]]) -> None:
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        say(f"  {name.ljust(width)}  {value}")


def _stampede(manager: TokenManager, threads: int) -> set[str]:
    start = threading.Barrier(threads)
    seen: list[Token] = []
    lock = threading.Lock()

    def caller() -> None:
        try:
            start.wait()
            token = manager.get_token()
        except (threading.BrokenBarrierError, EightyEightPayError):
            return  # the demo was interrupted (Ctrl-C) and is closing
        with lock:
            seen.append(token)

    workers = [threading.Thread(target=caller) for _ in range(threads)]
    try:
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    except BaseException:
        start.abort()  # release the callers waiting for a crowd that will not come
        raise
    return {token.fingerprint for token in seen}


def _on_fake_clock(sandbox: Sandbox, clock: FakeClock, **options: Any) -> TokenManager:
    """A threaded manager on the in-process emulator ``sandbox`` and the fake ``clock``."""
    return TokenManager(
        DEFAULT_API_KEY,
        DEFAULT_MERCHANT_ID,
        transport=SandboxTransport(sandbox, clock),
        clock=clock,
        store=MemoryStore(),
        **options,
    )


def _simulated_hour(say: Say) -> None:
    """Refresh-ahead over a simulated hour: in-process emulator and a fake clock."""
    clock = FakeClock()
    sandbox = Sandbox()
    background = ManualBackground()
    expired = waited = 0
    with _on_fake_clock(sandbox, clock, background=background, rng=random.Random(1)) as manager:
        for _ in range(3600 * 10):
            clock.advance(0.1)
            before = sandbox.stats()["token_requests"]
            token = manager.get_token()
            waited += sandbox.stats()["token_requests"] > before and before > 0
            expired += clock() >= token.usable_until
            background.run_pending()
    stats = sandbox.stats()
    _table(
        say,
        [
            ("calls (10 a second)", 36_000),
            ("token requests", stats["token_requests"]),
            ("429 answers", stats["rate_limited"]),
            ("expired tokens handed out", expired),
            ("callers that waited on the network", waited),
        ],
    )


def _rate_limit(say: Say) -> None:
    """A 429 from 88Pay: remembered, answered locally, no hammering."""
    clock = FakeClock()
    sandbox = Sandbox()
    sandbox.inject(
        Fault.status(
            429,
            body=b'{"status":"Error","code":429,"message":"Rate limit '
            b'exceeded. Please try again later.","retry_after":30}',
        )
    )
    with _on_fake_clock(sandbox, clock) as manager:
        answers = []
        for _ in range(50):
            try:
                manager.get_token()
            except RateLimited as limited:
                answers.append(limited.retry_after)
            clock.advance(0.1)
        during = sandbox.stats()["token_requests"] - 1
        clock.advance(30)
        recovered = manager.get_token()
    _table(
        say,
        [
            ("callers told to retry later", len(answers)),
            ("token requests during the cool-down", during),
            ("retry_after told to the first", f"{answers[0]:.1f} s"),
            ("after the cool-down", f"token {recovered.fingerprint}"),
        ],
    )


CHARGE = {
    "flow": "PAYIN",
    "method_code": "PSE",
    "amount": 25000,
    "currency": "COP",
    "country": "COL",
    "description": "eightyeightpay demo",
    "notification_url": "https://merchant.example/webhooks/88pay",
}


def _options(server: SandboxServer) -> dict[str, Any]:
    assert server.certificates is not None
    return {
        "base_url": server.url,
        "ca_bundle": str(server.certificates.ca_file),
        "store": MemoryStore(),  # each runtime starts cold, to show its own stampede
    }


def _cached_ns(call: Callable[[], object], calls: int = 100_000) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        call()
    return (time.perf_counter() - started) / calls * 1e9


def _charge_id(response: ApiResponse) -> str:
    data = response.data if isinstance(response.data, dict) else {}
    return f"{response.status} {data.get('transaction_id', '')}".strip()


def _threads_row(server: SandboxServer, callers: int) -> dict[str, object]:
    before = server.sandbox.stats()["token_requests"]
    with TokenManager(DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, **_options(server)) as manager:
        fingerprints = _stampede(manager, callers)
        requests = server.sandbox.stats()["token_requests"] - before
        cached = _cached_ns(manager.get_token)
        charge = manager.request("POST", "/api/transactions/charges", json=CHARGE)
    return {
        "callers": callers,
        "requests": requests,
        "tokens": len(fingerprints),
        "cached": cached,
        "charge": _charge_id(charge),
    }


async def _async_row(
    manager: Any, server: SandboxServer, callers: int, crowd: Callable[[int], Any]
) -> dict[str, object]:
    before = server.sandbox.stats()["token_requests"]
    tokens = await crowd(callers)
    requests = server.sandbox.stats()["token_requests"] - before
    calls = 100_000
    started = time.perf_counter()
    for _ in range(calls):
        await manager.get_token()
    cached = (time.perf_counter() - started) / calls * 1e9
    charge = await manager.request("POST", "/api/transactions/charges", json=CHARGE)
    return {
        "callers": callers,
        "requests": requests,
        "tokens": len(set(tokens)),
        "cached": cached,
        "charge": _charge_id(charge),
    }


def _asyncio_row(server: SandboxServer, callers: int) -> dict[str, object]:
    import asyncio

    from .async_manager import AsyncTokenManager

    async def main() -> dict[str, object]:
        async with AsyncTokenManager(
            DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, **_options(server)
        ) as manager:

            async def crowd(n: int) -> list[Token]:
                return list(await asyncio.gather(*(manager.get_token() for _ in range(n))))

            return await _async_row(manager, server, callers, crowd)

    return asyncio.run(main())


def _trio_row(server: SandboxServer, callers: int) -> dict[str, object]:
    import trio

    from .async_manager import open_trio_token_manager

    async def main() -> dict[str, object]:
        async with open_trio_token_manager(
            DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, **_options(server)
        ) as manager:

            async def crowd(n: int) -> list[Token]:
                tokens: list[Token] = []

                async def one() -> None:
                    tokens.append(await manager.get_token())

                async with trio.open_nursery() as nursery:
                    for _ in range(n):
                        nursery.start_soon(one)
                return tokens

            return await _async_row(manager, server, callers, crowd)

    return trio.run(main)


def _trio_available() -> bool:
    try:
        import trio  # noqa: F401
    except ImportError:
        return False
    return True


def _with_progress(name: str, run: Callable[[], dict[str, object]]) -> dict[str, object]:
    """Run one runtime's part, showing on a terminal that it is under way."""
    if not sys.stderr.isatty():
        return run()
    done = threading.Event()

    def spin() -> None:
        for mark in itertools.cycle("|/-\\"):
            sys.stderr.write(f"\r  {mark} {name}: callers waiting for the token …")
            sys.stderr.flush()
            if done.wait(0.1):
                break
        sys.stderr.write("\r" + " " * 60 + "\r")
        sys.stderr.flush()

    spinner = threading.Thread(target=spin, daemon=True)
    spinner.start()
    try:
        return run()
    finally:
        done.set()
        spinner.join()


def run_demo(*, threads: int = 256, tasks: int = 10_000, say: Say = print) -> int:
    """Run the demonstration, printing with ``say``; returns the exit code."""
    say("eightyeightpay demo: the 88Pay emulator on loopback over HTTPS, no configuration\n")
    with SandboxServer(Sandbox(), tls=True) as server:
        certificates = server.certificates
        assert certificates is not None
        _table(say, [("emulator", server.url), ("trusted CA", certificates.ca_file)])
        say("\n1. Every runtime: a crowd on a cold cache, then the cache, then a charge")
        runs: list[tuple[str, Callable[[], dict[str, object]]]] = [
            ("threads", lambda: _threads_row(server, threads)),
            ("asyncio", lambda: _asyncio_row(server, tasks)),
        ]
        if _trio_available():
            runs.append(("trio", lambda: _trio_row(server, tasks)))
        rows = [(name, _with_progress(name, run)) for name, run in runs]
        header = (
            "runtime",
            "callers",
            "token requests",
            "distinct tokens",
            "cached call",
            "charge",
        )
        lines = [header] + [
            (
                name,
                f"{row['callers']:,}",
                str(row["requests"]),
                str(row["tokens"]),
                f"{row['cached']:.0f} ns",
                str(row["charge"]),
            )
            for name, row in rows
        ]
        widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
        for line in lines:
            say(
                "  "
                + "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True))
            )
        if not _trio_available():
            say("  trio: not installed (pip install 'eightyeightpay[trio]')")
        stats = server.sandbox.stats()
        say("\n2. What the emulator counted")
        _table(say, [(name, stats[name]) for name in sorted(stats)])

    say("\n3. Refresh ahead of expiry: a simulated hour (fake clock, in-process emulator)")
    _simulated_hour(say)
    say("\n4. A 429 from 88Pay: remembered and answered locally")
    _rate_limit(say)
    say("\nDone. With EIGHTY_EIGHT_PAY_* set, `eightyeightpay token` talks to the real API.")
    return 0
