"""What the lifecycle tests share: counting the library's threads, many merchants."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from eightyeightpay import SandboxServer
from eightyeightpay.adapters.lifecycle import THREAD_PREFIX

SANDBOX_THREADS = f"{THREAD_PREFIX}sandbox"


def library_threads() -> list[str]:
    """Names of the live threads the client library started (the sandbox server's aside)."""
    return [
        thread.name
        for thread in threading.enumerate()
        if thread.name.startswith(THREAD_PREFIX) and not thread.name.startswith(SANDBOX_THREADS)
    ]


def merchants(server: SandboxServer, count: int) -> list[tuple[str, str]]:
    """``count`` new test merchants on ``server``: (API key, merchant id) pairs."""
    pairs = [(f"sk_test_lifecycle_{n:05d}", f"MCH-COL-L{n:05d}") for n in range(count)]
    for key, merchant in pairs:
        server.sandbox.add_account(key, merchant)
    return pairs


def eventually(check: Callable[[], bool], seconds: float = 30.0) -> bool:
    """Poll ``check`` until it holds or ``seconds`` pass; returns its last answer."""
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return check()
        time.sleep(0.01)
    return True
