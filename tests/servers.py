"""Test-owned servers on free loopback ports, which tests may stop and restart."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

CLI = shutil.which("eightyeightpay") or os.path.join(
    os.path.dirname(sys.executable), "eightyeightpay"
)
"""The installed console script, run as a user runs it."""


def with_ctrl_c(command: list[str]) -> list[str]:
    """``command`` with SIGINT at its default, so that Ctrl-C (SIGINT) reaches it.

    A shell without job control starts background jobs with SIGINT ignored, and an ignored
    signal stays ignored in every child: a test run that way could not send Ctrl-C.
    """
    reset = (
        "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
        "os.execv(sys.argv[1], sys.argv[1:])"
    )
    return [sys.executable, "-c", reset, *command]


@contextlib.contextmanager
def cli_sandbox(
    *options: str, stop: signal.Signals = signal.SIGTERM, status: int = 0
) -> Iterator[dict[str, Any]]:
    """``eightyeightpay sandbox --port 0 --json`` in a child process; yields what it printed.

    On leaving, the child is sent ``stop`` (SIGTERM; SIGINT is Ctrl-C), and it must exit
    with ``status`` (0 for SIGTERM, 130 for Ctrl-C, as docs/cli.md says).
    """
    command = [CLI, "sandbox", "--port", "0", "--json", *options]
    if stop == signal.SIGINT:
        command = with_ctrl_c(command)
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        try:
            assert process.stdout is not None and process.stderr is not None
            yield json.loads(process.stdout.readline())
        finally:
            process.send_signal(stop)
            try:
                code = process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                raise
        stderr = process.stderr.read()
    assert code == status, f"the sandbox command exited with {code}: {stderr}"
    assert "Traceback" not in stderr, stderr


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_port(port: int, up: bool, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                if up:
                    return
        except OSError:
            if not up:
                return
        time.sleep(0.02)
    raise RuntimeError(f"port {port} did not come {'up' if up else 'down'}")


class ServerProcess:
    """A server binary run on a fixed free port; stop() and start() keep the port."""

    binary = ""

    def __init__(self) -> None:
        if shutil.which(self.binary) is None:
            raise RuntimeError(f"{self.binary} is not installed; .ci/run installs it")
        self.port = free_port()
        self.directory = tempfile.mkdtemp(prefix=f"eightyeightpay-{self.binary}-")
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> None:
        self.process = subprocess.Popen(
            self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self.directory
        )
        _wait_for_port(self.port, up=True)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None
            _wait_for_port(self.port, up=False)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


class RedisServer(ServerProcess):
    binary = "redis-server"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        return [
            "redis-server",
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            self.directory,
        ]


class MemcachedServer(ServerProcess):
    binary = "memcached"

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def command(self) -> list[str]:
        return [
            "memcached",
            "-p",
            str(self.port),
            "-l",
            "127.0.0.1",
            "-U",
            "0",
            "-m",
            "16",
            "-u",
            "root",
        ]
