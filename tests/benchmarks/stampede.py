"""Stampede: a cold start with many concurrent callers against the HTTPS loopback emulator."""

from __future__ import annotations

import asyncio
import json
import statistics
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio
import urllib3

from eightyeightpay.adapters.async_manager import AsyncTokenManager, open_trio_token_manager
from eightyeightpay.adapters.sync import TokenManager
from eightyeightpay.plugins.memory import MemoryStore
from eightyeightpay.plugins.sandbox import DEFAULT_API_KEY, DEFAULT_MERCHANT_ID

from .baseline import AsyncReferenceCache, H11Client, ReferenceCache, urllib3_fetcher
from .common import Figures
from .serve import emulator_process

Outcome = dict[str, Any]


class Emulator:
    """The emulator served from its own process, controlled over its ``/_sandbox/`` routes."""

    def __init__(self, info: dict[str, Any]) -> None:
        self.url: str = info["url"]
        self.port: int = info["port"]
        self.ca_file: str = info["ca_file"]
        self._control = urllib3.PoolManager(ca_certs=self.ca_file, retries=False)

    def stats(self) -> dict[str, int]:
        """The emulator's counters."""
        stats: dict[str, int] = json.loads(
            self._control.request("GET", f"{self.url}/_sandbox/stats").data
        )
        return stats


def _outcome(server: Emulator, seconds: float, served: int, failed: int) -> Outcome:
    stats = server.stats()
    return {
        "token_requests": stats["token_requests"],
        "rate_limited": stats["rate_limited"],
        "served": served,
        "failed": failed,
        "seconds_until_all_returned": seconds,
    }


def _threads(call: Callable[[], object], callers: int) -> tuple[float, int, int]:
    barrier = threading.Barrier(callers + 1)
    finished: list[float] = []
    failures: list[int] = []

    def caller() -> None:
        barrier.wait()
        try:
            call()
        except Exception:  # a 429, or a connection the overloaded server dropped
            failures.append(1)
        finished.append(time.perf_counter())

    workers = [threading.Thread(target=caller) for _ in range(callers)]
    for worker in workers:
        worker.start()
    barrier.wait()
    started = time.perf_counter()
    for worker in workers:
        worker.join(timeout=120)
    return max(finished) - started, len(finished) - len(failures), len(failures)


def threaded(server: Emulator, ca_file: str, callers: int, baseline: bool) -> Outcome:
    """``callers`` threads call ``get_token()`` (or the reference ``get()``) at once."""
    if baseline:
        # At most 10 connections, callers queue for one: no listen-queue overflow.
        pool = urllib3.PoolManager(ca_certs=ca_file, retries=False, maxsize=10, block=True)
        cache = ReferenceCache(urllib3_fetcher(pool, server.url))
        seconds, served, failed = _threads(cache.get, callers)
        pool.clear()
    else:
        with TokenManager(
            DEFAULT_API_KEY,
            DEFAULT_MERCHANT_ID,
            base_url=server.url,
            ca_bundle=ca_file,
            store=MemoryStore(),
        ) as manager:
            seconds, served, failed = _threads(manager.get_token, callers)
    return _outcome(server, seconds, served, failed)


async def _tasks(
    call: Callable[[], Awaitable[object]], callers: int, spawn: Callable[..., Any]
) -> tuple[int, int]:
    outcomes = [0, 0]

    async def caller() -> None:
        try:
            await call()
            outcomes[0] += 1
        except Exception:  # a 429, or a connection the overloaded server dropped
            outcomes[1] += 1

    await spawn(caller, callers)
    return outcomes[0], outcomes[1]


async def _gather(caller: Callable[[], Awaitable[None]], callers: int) -> None:
    await asyncio.gather(*(caller() for _ in range(callers)))


async def _nursery(caller: Callable[[], Awaitable[None]], callers: int) -> None:
    async with trio.open_nursery() as nursery:
        for _ in range(callers):
            nursery.start_soon(caller)


def on_runtime(
    runtime: str, server: Emulator, ca_file: str, callers: int, baseline: bool
) -> Outcome:
    """``callers`` tasks on a cold cache: ours, or the reference pattern over raw h11."""
    spawn = _gather if runtime == "asyncio" else _nursery
    options: dict[str, Any] = {"base_url": server.url, "ca_bundle": ca_file, "store": MemoryStore()}

    async def main() -> tuple[float, int, int]:
        started = time.perf_counter()
        if baseline:
            # The reference pattern on a keep-alive async client of at most 10 connections.
            client = H11Client(runtime, "127.0.0.1", server.port, ca_file, limit=10)
            cache = AsyncReferenceCache(client.fetcher())
            served, failed = await _tasks(cache.get, callers, spawn)
            seconds = time.perf_counter() - started
            await client.aclose()
        elif runtime == "asyncio":
            async with AsyncTokenManager(DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, **options) as m:
                served, failed = await _tasks(m.get_token, callers, spawn)
                seconds = time.perf_counter() - started
        else:
            async with open_trio_token_manager(
                DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, **options
            ) as m:
                served, failed = await _tasks(m.get_token, callers, spawn)
                seconds = time.perf_counter() - started
        return seconds, served, failed

    seconds, served, failed = asyncio.run(main()) if runtime == "asyncio" else trio.run(main)
    return _outcome(server, seconds, served, failed)


def _median_of(runs: list[Outcome]) -> Outcome:
    """Each figure's median over the rounds (counts: the lower middle one), and each round's
    token requests."""
    summary: Outcome = {
        key: statistics.median_low(r[key] for r in runs)
        for key in ("token_requests", "rate_limited", "served", "failed")
    }
    summary["seconds_until_all_returned"] = round(
        statistics.median(r["seconds_until_all_returned"] for r in runs), 4
    )
    summary["token_requests_per_run"] = [r["token_requests"] for r in runs]
    summary["rounds"] = len(runs)
    return summary


def _fresh(case: Callable[[Emulator, bool], Outcome], baseline: bool) -> Outcome:
    """Run ``case`` against a fresh emulator process: a cold cache and an empty rate window."""
    with emulator_process(real_limits=True) as info:
        return case(Emulator(info), baseline)


def run(quick: bool) -> Figures:
    """Cold starts on every runtime, ours and the reference pattern, interleaved rounds.

    Each round gets a fresh emulator (88Pay's real limits) in a process of its own, so that
    its TLS and ES256 work does not compete with the callers for their GIL and no round
    inherits another's rate window. Ours and the reference run the same number of rounds
    with the same number of callers; each case is named by them.
    """
    rounds = 3 if quick else 5
    tasks = 2_000 if quick else 10_000
    figures: Figures = {}
    cases: list[tuple[str, Callable[[Emulator, bool], Outcome]]] = [
        ("threads x256", lambda e, b: threaded(e, e.ca_file, 256, b)),
        (f"asyncio x{tasks}", lambda e, b: on_runtime("asyncio", e, e.ca_file, tasks, b)),
        (f"trio x{tasks}", lambda e, b: on_runtime("trio", e, e.ca_file, tasks, b)),
    ]
    for name, case in cases:
        ours: list[Outcome] = []
        theirs: list[Outcome] = []
        for _ in range(rounds):
            ours.append(_fresh(case, False))
            theirs.append(_fresh(case, True))
        figures[name] = {"eightyeightpay": _median_of(ours), "reference": _median_of(theirs)}
    return figures
