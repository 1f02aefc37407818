"""A real fleet: 8 OS processes (threaded, asyncio and trio mixed) sharing one Redis,
against the HTTPS loopback emulator."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from eightyeightpay.plugins.sandbox import Sandbox, SandboxServer
from tests.servers import RedisServer

RUNTIMES = ("sync", "asyncio", "trio") * 3


class Workers:
    def __init__(self, server: SandboxServer, redis: RedisServer, count: int, *args: str) -> None:
        assert server.certificates is not None
        self.processes = [
            subprocess.Popen(
                [sys.executable, "-m", "tests.e2e.fleet_worker", "--runtime", RUNTIMES[i],
                 "--url", server.url, "--ca", str(server.certificates.ca_file),
                 "--redis", redis.url, *args],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            )
            for i in range(count)
        ]

    def go(self) -> None:
        for process in self.processes:
            assert process.stdout is not None and process.stdout.readline().strip() == "ready"
        for process in self.processes:
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()

    def results(self, timeout: float = 120) -> list[dict[str, Any]]:
        reports = []
        for process in self.processes:
            out, _ = process.communicate(timeout=timeout)
            assert process.returncode == 0
            reports.append(json.loads(out.strip().splitlines()[-1]))
        return reports

    def kill(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.communicate()


@pytest.fixture
def fleet_redis() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.close()


def test_eight_cold_processes_make_exactly_one_token_request(fleet_redis: RedisServer) -> None:
    with SandboxServer(Sandbox(), tls=True) as server:
        workers = Workers(server, fleet_redis, 8, "--mode", "cold")
        try:
            workers.go()
            reports = workers.results()
        finally:
            workers.kill()
        assert server.sandbox.stats()["token_requests"] == 1
    assert all(report["errors"] == {} for report in reports)
    assert len({fp for report in reports for fp in report["fingerprints"]}) == 1
    assert sum(report["sent"] for report in reports) == 1
