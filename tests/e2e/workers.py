"""OS processes of a test fleet (tests/e2e/fleet_worker.py), started, released and read."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Sequence
from typing import Any, Self

from eightyeightpay.http import HttpRequest
from eightyeightpay.plugins.sandbox import (
    API_RATE_LIMITS,
    TOKEN_PATH,
    TOKEN_RATE_LIMITS,
    RateLimit,
    Sandbox,
    SandboxReply,
    SandboxServer,
)

RUNTIMES = ("sync", "asyncio", "trio") * 3

# Real-time runs use 6 s tokens (a tenth of 88Pay's 60 s) so that three lifetimes take 20 s.
# Every limit is compressed by the same factor on both sides: the emulator allows 10 token
# requests per 6 s and 100 per 360 s, 60 API calls per 6 s and 1,000 per 360 s, and the
# workers' Policy.compressed(10) governs the same windows, so the run keeps 88Pay's ratio
# of token life to rate limits.
FACTOR = 10
LIFETIME = 60 // FACTOR
COMPRESSED = ("--compress", str(FACTOR))


class TimedSandbox(Sandbox):
    """An emulator that also keeps the time (epoch seconds) each request reached it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._times: list[tuple[str, float]] = []
        self._times_lock = threading.Lock()

    def handle(self, request: HttpRequest, now: float) -> SandboxReply:
        reply = super().handle(request, now)
        with self._times_lock:
            self._times.append((request.path.split("?")[0], now))
        return reply

    def times(self, path: str) -> list[float]:
        """When each request to ``path`` (without its query) arrived, oldest first."""
        with self._times_lock:
            return sorted(t for each, t in self._times if each == path)

    def token_times(self) -> list[float]:
        """When each token request arrived, oldest first."""
        return self.times(TOKEN_PATH)


def compressed_sandbox() -> TimedSandbox:
    """An emulator with 88Pay's token life and the windows of its limits (token requests
    and API calls) all divided by FACTOR."""
    return TimedSandbox(
        token_lifetime=LIFETIME,
        token_limits=tuple(RateLimit(r.limit, r.window / FACTOR) for r in TOKEN_RATE_LIMITS),
        api_limits=tuple(RateLimit(r.limit, r.window / FACTOR) for r in API_RATE_LIMITS),
    )


class Workers:
    """``count`` processes of ``python -m module`` against the emulator and one Redis.

    Process ``i`` runs on ``runtimes[i]`` and is given the emulator's URL and CA, the Redis
    URL and ``args``. Each prints ``ready``, starts on ``go`` and ends with a JSON line.
    """

    def __init__(
        self,
        server: SandboxServer,
        redis: str,
        count: int,
        *args: str,
        module: str = "tests.e2e.fleet_worker",
        runtimes: Sequence[str] = RUNTIMES,
    ) -> None:
        assert server.certificates is not None
        self.processes = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    module,
                    "--runtime",
                    runtimes[i],
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

    def ready(self) -> None:
        """Wait until every process has said it is ready."""
        for process in self.processes:
            assert process.stdout is not None and process.stdout.readline().strip() == "ready"

    def release(self) -> None:
        """Tell every process to start."""
        for process in self.processes:
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()

    def go(self) -> None:
        """Wait until all are ready, then start them all."""
        self.ready()
        self.release()

    def results(self, timeout: float = 120, *, exit_zero: bool = True) -> list[dict[str, Any]]:
        """The last line of each process's output, read as JSON once it has ended; each must
        have exited with status 0 unless ``exit_zero`` is False."""
        reports = []
        for process in self.processes:
            out, _ = process.communicate(timeout=timeout)
            assert process.returncode == 0 or not exit_zero
            reports.append(json.loads(out.strip().splitlines()[-1]))
        return reports

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.kill()

    def kill(self) -> None:
        """Kill what still runs and reap every process (leaving a ``with`` block does it)."""
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.communicate()
