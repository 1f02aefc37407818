"""A real fleet: N OS processes for a few real minutes against the HTTPS loopback emulator.

Four groups run side by side, each against its own emulator (so each has its own 10/minute
and 100/hour budget): one process on the Redis store (what a single process spends), N
processes sharing Redis, N processes each with its own memory store, and N processes of
88Pay's reference pattern. Real 60 s tokens and real limits.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from eightyeightpay.plugins.sandbox import SandboxServer
from tests.e2e.workers import Workers
from tests.servers import RedisServer

from .common import Figures

RUNTIMES = ("sync", "asyncio", "trio")


class Group(Workers):
    """``count`` worker processes (tests/benchmarks/fleet_worker.py) against one emulator."""

    def __init__(
        self, server: SandboxServer, count: int, store: str, duration: float, redis: str
    ) -> None:
        runtimes = ["sync" if store == "reference" else RUNTIMES[i % 3] for i in range(count)]
        super().__init__(
            server,
            redis,
            count,
            "--store",
            store,
            "--duration",
            str(duration),
            module="tests.benchmarks.fleet_worker",
            runtimes=runtimes,
        )
        self.server = server

    def figures(self, timeout: float) -> Figures:
        """What the group's processes reported, with the emulator's counts."""
        reports = self.results(timeout, exit_zero=False)
        stats = self.server.sandbox.stats()
        errors: dict[str, int] = {}
        for report in reports:
            for name, count in report["errors"].items():
                errors[name] = errors.get(name, 0) + count
        return {
            "processes": len(reports),
            "token_requests": stats["token_requests"],
            "rate_limited_429": stats["rate_limited"],
            "calls": sum(r["calls"] for r in reports),
            "calls_failed": sum(errors.values()),
            "failures": errors,
            "unusable_tokens_handed_out": sum(r["unusable"] for r in reports),
        }


class Fleet:
    """Start the groups; :meth:`finish` waits for them and returns the figures."""

    def __init__(self, processes: int, duration: float) -> None:
        self.duration = duration
        self._stack = contextlib.ExitStack()
        self.redis = RedisServer()
        self.redis.start()
        self._stack.callback(self.redis.close)
        self.groups: dict[str, Group] = {}
        for name, count, store in (
            ("one process, redis store", 1, "redis"),
            (f"{processes} processes, redis store", processes, "redis"),
            (f"{processes} processes, memory store each", processes, "memory"),
            (f"{processes} processes, reference pattern", processes, "reference"),
        ):
            server = self._stack.enter_context(SandboxServer(tls=True))
            group = Group(server, count, store, duration, self.redis.url)
            self._stack.callback(group.kill)
            self.groups[name] = group
        for group in self.groups.values():
            group.ready()
        for group in self.groups.values():
            group.release()
        self.started = time.monotonic()

    def finish(self) -> Figures:
        """Wait for every worker; stop the servers."""
        try:
            figures: Figures = {"seconds": self.duration}
            for name, group in self.groups.items():
                figures[name] = group.figures(timeout=self.duration + 120)
            return figures
        finally:
            self._stack.close()


@contextlib.contextmanager
def running(quick: bool, processes: int = 8) -> Iterator[Fleet]:
    """A fleet running in the background while the caller does other work."""
    fleet = Fleet(processes, 30.0 if quick else 180.0)
    try:
        yield fleet
    finally:
        fleet._stack.close()
