"""Threads the library runs in a process: owned, stopped on collection, not one per manager.

The emulator runs in a process of its own (:class:`SandboxProcess`), so every thread named
``eightyeightpay-…`` in the test process is the client library's.
"""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys
import threading
import time
import tracemalloc
import warnings
from collections.abc import Callable, Iterator

import pytest

from eightyeightpay import (
    DEFAULT_API_KEY,
    DEFAULT_MERCHANT_ID,
    AsyncSandboxTransport,
    AsyncTokenManager,
    FakeClock,
    MemoryStore,
    Sandbox,
    TokenManager,
)
from eightyeightpay.plugins.urllib3_transport import process_pools
from tests.lifecycle.support import SandboxProcess, eventually, library_threads


@pytest.fixture
def merchants_100() -> Iterator[SandboxProcess]:
    server = SandboxProcess(100)
    yield server
    server.close()


@pytest.fixture
def merchants_1000() -> Iterator[SandboxProcess]:
    server = SandboxProcess(1000)
    yield server
    server.close()


def _managers(server: SandboxProcess, clock: FakeClock) -> list[TokenManager]:
    """A manager per merchant of ``server``, all on ``clock``."""
    store = MemoryStore()
    return [
        TokenManager(
            key, merchant, base_url=server.url, ca_bundle=server.ca_file, store=store, clock=clock
        )
        for key, merchant in server.merchants
    ]


def _refresh_each_once(
    managers: list[TokenManager], server: SandboxProcess, clock: FakeClock
) -> None:
    """A token each (on the caller's thread), then a refresh-ahead each (on the worker)."""
    tokens = [manager.get_token() for manager in managers]
    # Into the refresh-ahead window: every token is stale, served, refreshed in the background.
    first = tokens[0]
    clock.advance(first.fresh_until - clock() + (first.usable_until - first.fresh_until) / 2)
    for manager in managers:
        assert manager.get_token().usable_until > clock()
    total = 2 * len(managers)
    assert eventually(lambda: server.stats()["token_requests"] == total, seconds=120)


def _no_library_threads() -> bool:
    # The refresh thread is joined on the spot; the deadline watchdog, told to stop, ends by
    # itself as soon as it wakes (milliseconds).
    return eventually(lambda: library_threads() == [], seconds=2.0)


def test_100_managers_dropped_unclosed_stop_their_threads_with_a_resource_warning_each(
    merchants_100: SandboxProcess,
) -> None:
    clock = FakeClock()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        managers = _managers(merchants_100, clock)
        _refresh_each_once(managers, merchants_100, clock)
        assert "eightyeightpay-refresh" in library_threads()  # it ran the refreshes
        names = {manager.credentials.merchant_id for manager in managers}
        del managers
        gc.collect()
        assert _no_library_threads(), library_threads()
    unclosed = [w for w in caught if issubclass(w.category, ResourceWarning)]
    assert len(unclosed) == 100
    assert {str(w.message).split(" for ")[1].split(" ")[0] for w in unclosed} == names
    assert all("was never closed" in str(w.message) for w in unclosed)


def test_an_async_manager_dropped_unclosed_warns() -> None:
    clock = FakeClock()
    manager = AsyncTokenManager(
        DEFAULT_API_KEY,
        DEFAULT_MERCHANT_ID,
        transport=AsyncSandboxTransport(Sandbox(), clock),
        clock=clock,
        store=MemoryStore(),
    )
    asyncio.run(manager.get_token())
    with pytest.warns(ResourceWarning, match=r"AsyncTokenManager for MCH-COL-TEST-12345 was never"):
        del manager
        gc.collect()


class _Sampler:
    """Samples the library's live threads every 5 ms from a thread of its own (not named
    ``eightyeightpay-``): the peak count and the names seen."""

    def __init__(self) -> None:
        self.peak = 0
        self.names: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="test-sampler")
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            live = library_threads()
            self.peak = max(self.peak, len(live))
            self.names.update(live)
            time.sleep(0.005)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def _traced(step: Callable[[], object]) -> int:
    """Bytes traced by tracemalloc after ``step()`` (tracemalloc already started)."""
    step()
    return tracemalloc.get_traced_memory()[0]


def test_1000_managers_for_1000_merchants_share_at_most_4_threads_and_one_pool(
    merchants_1000: SandboxProcess,
) -> None:
    server, clock = merchants_1000, FakeClock()
    sampler = _Sampler()
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        managers: list[TokenManager] = []
        built = _traced(lambda: managers.extend(_managers(server, clock)))
        held = _traced(lambda: _refresh_each_once(managers, server, clock))
    finally:
        tracemalloc.stop()
        sampler.stop()
    pool = process_pools()[server.url]
    for manager in managers:
        manager.close()
    print(
        f"\n1000 managers: {(built - start) / 1000:.0f} B each built, "
        f"{(held - start) / 1000:.0f} B each with a token; peak library threads "
        f"{sampler.peak} {sorted(sampler.names)}; connections opened {pool.opened} (cap {pool.cap})"
    )
    assert sampler.peak <= 4
    assert pool.opened <= pool.cap
    assert _no_library_threads(), library_threads()


EXIT_SCRIPT = """
import sys
from eightyeightpay import FakeClock, MemoryStore, TokenManager
url, ca_file, key, merchant = sys.argv[1:]
clock = FakeClock()
payments = TokenManager(key, merchant, base_url=url, ca_bundle=ca_file, store=MemoryStore(),
                        clock=clock)   # module level, never closed: as in many web apps
token = payments.get_token()
clock.advance(token.fresh_until - clock() + 0.5)
payments.get_token()  # a refresh-ahead queued: the refresh thread is running at exit
print("done", flush=True)
"""


def test_interpreter_exit_with_an_unclosed_manager_is_clean(merchants_100: SandboxProcess) -> None:
    key, merchant = merchants_100.merchants[0]
    finished = subprocess.run(
        [
            sys.executable,
            "-X",
            "dev",
            "-c",
            EXIT_SCRIPT,
            merchants_100.url,
            merchants_100.ca_file,
            key,
            merchant,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert finished.returncode == 0 and finished.stdout == "done\n"
    assert "Exception ignored" not in finished.stderr and "Traceback" not in finished.stderr
