"""A real fleet: N OS processes for a few real minutes against the HTTPS loopback emulator.

Four groups run side by side, each against its own emulator (so each has its own 10/minute
and 100/hour budget): one process on the Redis store (what a single process spends), N
processes sharing Redis, N processes each with its own memory store, and N processes of
88Pay's reference pattern. Real 60 s tokens and real limits.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

from eightyeightpay.plugins.sandbox import SandboxServer
from tests.servers import RedisServer

from .common import Figures

RUNTIMES = ("sync", "asyncio", "trio")


class Group:
    """``count`` worker processes against one emulator."""

    def __init__(
        self, server: SandboxServer, count: int, store: str, duration: float, redis: str
    ) -> None:
        assert server.certificates is not None
        self.server = server
        self.processes = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.benchmarks.fleet_worker",
                    "--runtime",
                    "sync" if store == "reference" else RUNTIMES[i % 3],
                    "--store",
                    store,
                    "--url",
                    server.url,
                    "--ca",
                    str(server.certificates.ca_file),
                    "--redis",
                    redis,
                    "--duration",
                    str(duration),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for i in range(count)
        ]

    def ready(self) -> None:
        for process in self.processes:
            assert process.stdout is not None and process.stdout.readline().strip() == "ready"

    def go(self) -> None:
        for process in self.processes:
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()

    def results(self, timeout: float) -> Figures:
        reports: list[dict[str, Any]] = []
        for process in self.processes:
            out, _ = process.communicate(timeout=timeout)
            reports.append(json.loads(out.strip().splitlines()[-1]))
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

    def kill(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.communicate()


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
            group.go()
        self.started = time.monotonic()

    def finish(self) -> Figures:
        """Wait for every worker; stop the servers."""
        try:
            figures: Figures = {"seconds": self.duration}
            for name, group in self.groups.items():
                figures[name] = group.results(timeout=self.duration + 120)
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
