"""Threads the library runs in a process: owned, stopped on collection, not one per manager."""

from __future__ import annotations

import gc
import warnings

from eightyeightpay import FakeClock, MemoryStore, SandboxServer, TokenManager
from tests.lifecycle.support import eventually, library_threads, merchants


def _managers(
    server: SandboxServer, count: int, clock: FakeClock, store: MemoryStore
) -> list[TokenManager]:
    assert server.certificates is not None
    return [
        TokenManager(
            key,
            merchant,
            base_url=server.url,
            ca_bundle=str(server.certificates.ca_file),
            store=store,
            clock=clock,
        )
        for key, merchant in merchants(server, count)
    ]


def _refresh_each_once(
    managers: list[TokenManager], server: SandboxServer, clock: FakeClock
) -> None:
    """A token each (on the caller's thread), then a refresh-ahead each (on the worker)."""
    for manager in managers:
        manager.get_token()
    clock.advance(55.0)  # every token is now stale: served, and refreshed in the background
    for manager in managers:
        manager.get_token()
    total = 2 * len(managers)
    assert eventually(lambda: server.sandbox.stats()["token_requests"] == total)


def test_100_managers_dropped_unclosed_stop_their_threads_with_a_resource_warning_each(
    https_server: SandboxServer,
) -> None:
    clock = FakeClock()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        managers = _managers(https_server, 100, clock, MemoryStore())
        _refresh_each_once(managers, https_server, clock)
        assert library_threads(), "the refresh thread ran the refreshes"
        names = {manager.credentials.merchant_id for manager in managers}
        del managers
        gc.collect()
        assert library_threads() == []
    unclosed = [w for w in caught if issubclass(w.category, ResourceWarning)]
    assert len(unclosed) == 100
    assert {str(w.message).split(" for ")[1].split(" ")[0] for w in unclosed} == names
    assert all("was never closed" in str(w.message) for w in unclosed)
