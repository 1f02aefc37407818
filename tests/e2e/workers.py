"""OS processes of a test fleet (tests/e2e/fleet_worker.py), started, released and read."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from eightyeightpay.plugins.sandbox import SandboxServer

RUNTIMES = ("sync", "asyncio", "trio") * 3


class Workers:
    def __init__(self, server: SandboxServer, redis: str, count: int, *args: str) -> None:
        assert server.certificates is not None
        self.processes = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.e2e.fleet_worker",
                    "--runtime",
                    RUNTIMES[i],
                    "--url",
                    server.url,
                    "--ca",
                    str(server.certificates.ca_file),
                    "--redis",
                    redis,
                    *args,
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
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
