"""What the lifecycle tests share: counting the library's threads, many merchants."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable

from eightyeightpay.adapters.lifecycle import THREAD_PREFIX

SANDBOX_THREADS = f"{THREAD_PREFIX}sandbox"


def library_threads() -> list[str]:
    """Names of the live threads the client library started (the sandbox server's aside)."""
    return [
        thread.name
        for thread in threading.enumerate()
        if thread.name.startswith(THREAD_PREFIX) and not thread.name.startswith(SANDBOX_THREADS)
    ]


def eventually(check: Callable[[], bool], seconds: float = 30.0) -> bool:
    """Poll ``check`` until it holds or ``seconds`` pass; returns its last answer."""
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return check()
        time.sleep(0.01)
    return True


SERVE = """
import json, sys
from eightyeightpay.plugins.sandbox import SandboxServer
from eightyeightpay.plugins.sandbox.emulator import Sandbox
sandbox = Sandbox()
for n in range(int(sys.argv[1])):
    sandbox.add_account(f"sk_test_lifecycle_{n:05d}", f"MCH-COL-L{n:05d}")
with SandboxServer(sandbox, tls=True) as server:
    print(json.dumps({"url": server.url, "ca_file": str(server.certificates.ca_file)}), flush=True)
    for _ in sys.stdin:
        print(json.dumps(sandbox.stats()), flush=True)
"""


class SandboxProcess:
    """The HTTPS emulator in a process of its own, knowing ``count`` test merchants.

    Its threads and memory are not the test process's: what the test counts there is the
    client library's alone.
    """

    def __init__(self, count: int) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", SERVE, str(count)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None and self.process.stdin is not None
        info = json.loads(self.process.stdout.readline())
        self.url: str = info["url"]
        self.ca_file: str = info["ca_file"]
        self.merchants = [(f"sk_test_lifecycle_{n:05d}", f"MCH-COL-L{n:05d}") for n in range(count)]

    def stats(self) -> dict[str, int]:
        """What the emulator has served so far."""
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write("stats\n")
        self.process.stdin.flush()
        answer: dict[str, int] = json.loads(self.process.stdout.readline())
        return answer

    def close(self) -> None:
        """Stop the emulator; it must exit cleanly."""
        assert self.process.stdin is not None
        self.process.stdin.close()
        assert self.process.wait(timeout=30) == 0
        if self.process.stdout is not None:
            self.process.stdout.close()
