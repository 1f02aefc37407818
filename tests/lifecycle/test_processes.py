"""Managers across processes: a fork mid-refresh, and multiprocessing's three start methods."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from eightyeightpay import (
    DEFAULT_API_KEY,
    DEFAULT_MERCHANT_ID,
    FakeClock,
    Fault,
    SandboxServer,
    Token,
    TokenManager,
)
from tests.conftest import InProcess
from tests.lifecycle.forking import in_child
from tests.lifecycle.support import eventually
from tests.lifecycle.workers import CHARGE, charge
from tests.support import https_options


def test_a_child_forked_during_a_refresh_gets_a_token_within_one_request_time(
    https_server: SandboxServer, https_manager: TokenManager
) -> None:
    https_server.sandbox.inject(Fault.latency(2.0))  # the parent's request is out a while
    got: list[Token] = []
    parent = threading.Thread(target=lambda: got.append(https_manager.get_token()))
    parent.start()
    # Fork once the request is at the server (the parent's thread waits for the answer),
    # not while a parent thread may be halfway through an import: CPython's per-module
    # import locks stay held in a child forked then, whatever the library does.
    assert eventually(lambda: https_server.sandbox.pending_faults() == 0)
    assert https_manager._slot.machine.flight is not None

    def child() -> list[object]:
        started = time.monotonic()
        token = https_manager.get_token()
        return [time.monotonic() - started, token.fingerprint]

    elapsed, fingerprint = in_child(child)
    parent.join(timeout=30)
    assert elapsed < https_manager.policy.request_timeout
    assert got and fingerprint != got[0].fingerprint  # the child's own request, not a hang
    assert https_server.sandbox.stats()["token_requests"] == 2


@pytest.fixture
def environment(https_server: SandboxServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    assert https_server.certificates is not None
    monkeypatch.setenv("EIGHTY_EIGHT_PAY_API_KEY", "sk_test_lifecycle_env_0001")
    monkeypatch.setenv("EIGHTY_EIGHT_PAY_MERCHANT_ID", "MCH-COL-ENV-1")
    monkeypatch.setenv("EIGHTY_EIGHT_PAY_BASE_URL", https_server.url)
    https_server.sandbox.add_account("sk_test_lifecycle_env_0001", "MCH-COL-ENV-1")
    yield str(https_server.certificates.ca_file)


@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
def test_multiprocessing_children_charge_with_the_parents_manager(
    https_server: SandboxServer, environment: str, method: str
) -> None:
    context: Any = multiprocessing.get_context(method)
    answers = context.Queue()
    with TokenManager.from_env(ca_bundle=environment) as manager:
        # The parent charges first: a token in its cache, a kept-alive connection in its pool.
        first = manager.request("POST", "/api/transactions/charges", json={**CHARGE, "amount": 1})
        assert first.status == 200
        # fork: the child inherits the manager; spawn and forkserver: it travels pickled.
        children = [
            context.Process(target=charge, args=(manager, amount, answers)) for amount in (2, 3, 4)
        ]
        for child in children:
            child.start()
        second = manager.request("POST", "/api/transactions/charges", json={**CHARGE, "amount": 5})
        results = [answers.get(timeout=60) for _ in children]
        for child in children:
            child.join(timeout=30)
            assert child.exitcode == 0
    assert second.status == 200 and second.data["amount"] == 5
    assert sorted(amount for _, _, amount in results) == [2, 3, 4], results
    assert all(status == 200 for _, status, _ in results), results
    assert len({pid for pid, _, _ in results} | {os.getpid()}) == 4
    tokens = https_server.sandbox.stats()["token_requests"]
    # fork: the children keep the parent's token; spawn/forkserver: one request per child.
    assert tokens == (1 if method == "fork" else 4)
    answers.close()


def test_a_new_process_the_fork_hook_missed_is_noticed_by_the_pid_check(inproc: InProcess) -> None:
    manager = inproc.manager()
    slot = manager._slot
    with slot.lock:  # a flight some thread of the "parent" started and will never finish here
        stranded = slot.machine.decide_and_start(inproc.clock())
    assert slot.machine.flight is not None
    slot._pid = -1  # what a fork that bypassed os.register_at_fork leaves: another pid
    token = manager.get_token()  # without the check: waits for the stranded flight, then times out
    assert slot._pid == os.getpid() and inproc.clock() < token.usable_until
    assert slot.machine.flight is None and stranded is not None


def test_a_child_forked_during_a_background_refresh_refreshes_on_a_thread_of_its_own(
    https_server: SandboxServer,
) -> None:
    clock = FakeClock()
    with TokenManager(
        DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, **https_options(https_server), clock=clock
    ) as manager:
        old = manager.get_token()
        clock.advance(old.fresh_until - clock() + 0.5)  # stale: refreshed in the background
        https_server.sandbox.inject(Fault.latency(2.0))
        assert manager.get_token() == old
        assert eventually(lambda: https_server.sandbox.pending_faults() == 0)

        def child() -> list[object]:
            served = manager.get_token()  # still usable: served, and a refresh queued here
            started = time.monotonic()
            assert eventually(lambda: manager.get_token() != old, seconds=10.0)
            threads = sorted(t.name for t in threading.enumerate())
            return [served == old, time.monotonic() - started, threads]

        served_old, elapsed, threads = in_child(child)
        assert served_old and elapsed < manager.policy.request_timeout
        assert "eightyeightpay-refresh" in threads  # started anew in the child, on need
        assert eventually(lambda: manager.get_token() != old)  # the parent's own refresh ends too
