"""close() ends a request in progress: its thread does not outlive the manager, its caller
learns what became of it, and a forked child's close() leaves the parent's alone.

A token request stuck on a server that never answers would otherwise hold its thread (and
the manager's close(), which waits for a running background refresh) until the request's
timeout. Every wait here is event-driven, bounded far below that timeout.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3

from eightyeightpay import (
    DEFAULT_API_KEY,
    DEFAULT_MERCHANT_ID,
    ApiResponse,
    EightyEightPayError,
    Fault,
    ManagerClosed,
    MemoryStore,
    Policy,
    SandboxServer,
    TokenManager,
)
from eightyeightpay.plugins.sandbox import make_test_ca
from tests.lifecycle.forking import in_child
from tests.lifecycle.support import SandboxProcess, eventually
from tests.reliability.rawserver import Conversation, RawServer

REQUEST_TIMEOUT = 30.0
"""The token request's timeout: far beyond every bound below."""
PROMPT = 3.0
"""How long close() may take to end the request's thread and wake its waiter."""


def _read_and_stay_silent(conversation: Conversation) -> None:
    conversation.handshake()
    conversation.read_request_head()
    conversation.stopping.wait(REQUEST_TIMEOUT)


@pytest.fixture(params=["http", "https"])
def silent(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A manager's options for a loopback server that takes the request and never answers.

    Plain HTTP: the kernel's backlog takes the connection. HTTPS: a raw server completes the
    TLS handshake and reads the request (the read that is cut is then a TLS read).
    """
    if request.param == "http":
        with socket.create_server(("127.0.0.1", 0)) as listener:
            port = listener.getsockname()[1]
            yield {"base_url": f"http://127.0.0.1:{port}", "allow_http_loopback": True}
    else:
        certificates = make_test_ca(tmp_path)
        with RawServer(_read_and_stay_silent, certificates.server_context()) as server:
            yield {"base_url": server.url, "ca_bundle": str(certificates.ca_file)}


def _flight_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("eightyeightpay-flight")]


def test_close_ends_a_token_request_stuck_on_a_silent_server_and_its_waiter_gets_an_error(
    silent: dict[str, Any],
) -> None:
    before = set(_flight_threads())
    manager = TokenManager(
        DEFAULT_API_KEY,
        DEFAULT_MERCHANT_ID,
        store=MemoryStore(),
        policy=Policy(request_timeout=REQUEST_TIMEOUT, deadline=REQUEST_TIMEOUT),
        **silent,
    )
    outcome: list[object] = []

    def waiter() -> None:
        try:
            outcome.append(manager.get_token(REQUEST_TIMEOUT))
        except EightyEightPayError as error:
            outcome.append(error)

    # An impatient caller starts the request in a flight thread of its own and gives up.
    with pytest.raises(EightyEightPayError):
        manager.get_token(0.3)
    flights = [t for t in _flight_threads() if t not in before]
    assert len(flights) == 1 and flights[0].is_alive()  # the request is still out
    patient = threading.Thread(target=waiter)
    patient.start()
    assert eventually(lambda: manager.stats().waited == 2, PROMPT)  # it waits for the flight

    manager.close()

    flights[0].join(PROMPT)
    assert not flights[0].is_alive()
    patient.join(PROMPT)
    assert not patient.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], ManagerClosed), outcome


CHARGES = "/api/transactions/charges"
CHARGE = {"flow": "PAYIN", "method_code": "PSE", "amount": 10, "currency": "COP", "country": "COL"}


def _charge_in_thread(manager: TokenManager, outcome: list[object]) -> threading.Thread:
    def charge() -> None:
        try:
            outcome.append(manager.request("POST", CHARGES, json=CHARGE))
        except EightyEightPayError as error:
            outcome.append(error)

    thread = threading.Thread(target=charge)
    thread.start()
    return thread


def test_close_cutting_a_charge_in_flight_says_it_may_have_been_processed() -> None:
    """88Pay has the charge (created) and answers slowly; close() cuts the wait. The caller's
    ManagerClosed says the charge may have been processed: "not processed" would tell it to
    send the charge again, and the customer would pay twice."""
    with SandboxServer() as server:
        server.sandbox.inject(Fault.latency(20), path=CHARGES)
        manager = TokenManager(
            DEFAULT_API_KEY,
            DEFAULT_MERCHANT_ID,
            base_url=server.url,
            allow_http_loopback=True,
            store=MemoryStore(),
        )
        manager.get_token()
        outcome: list[object] = []
        thread = _charge_in_thread(manager, outcome)
        assert eventually(lambda: server.sandbox.stats()["charges"] == 1, PROMPT)
        manager.close()
        thread.join(PROMPT)
        assert not thread.is_alive()
        [error] = outcome
        assert isinstance(error, ManagerClosed), error
        assert error.may_have_been_processed
        assert error.failed_request == f"POST {CHARGES}"
        assert "may have been processed" in str(error)


def test_a_forked_child_closing_its_copy_leaves_the_parents_call_in_flight_alone() -> None:
    """The parent has a charge in flight when it forks; the child closes the manager it
    inherited (as a worker does at shutdown). The child's close must not cut the parent's
    exchange: the socket is the parent's too."""
    sandbox = SandboxProcess(1)
    try:
        control = urllib3.PoolManager(ca_certs=sandbox.ca_file, retries=False)
        fault = {"kind": "latency", "seconds": 2, "path": CHARGES}
        assert control.request("POST", sandbox.url + "/_sandbox/faults", json=fault).status < 300
        manager = TokenManager(
            DEFAULT_API_KEY,
            DEFAULT_MERCHANT_ID,
            base_url=sandbox.url,
            ca_bundle=sandbox.ca_file,
            store=MemoryStore(),
        )
        manager.get_token()
        outcome: list[object] = []
        thread = _charge_in_thread(manager, outcome)
        assert eventually(lambda: sandbox.stats()["charges"] == 1, PROMPT)

        def close_in_child() -> str:
            manager.close()
            return "closed"

        assert in_child(close_in_child) == "closed"
        thread.join(PROMPT + 2)
        assert not thread.is_alive()
        [response] = outcome
        assert isinstance(response, ApiResponse) and response.status == 200, response
        manager.close()
    finally:
        sandbox.close()
