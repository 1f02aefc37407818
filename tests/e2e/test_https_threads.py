"""The threaded manager against the emulator over real HTTPS on loopback (TLS verified)."""

from __future__ import annotations

import threading

import pytest

from eightyeightpay import EightyEightPayError, ServerError, TLSError, TransportError
from eightyeightpay.adapters.sync import TokenManager
from eightyeightpay.plugins.memory import MemoryStore
from eightyeightpay.plugins.sandbox import (
    DEFAULT_API_KEY,
    DEFAULT_MERCHANT_ID,
    Fault,
    SandboxServer,
)
from eightyeightpay.tokens import Token


def stampede(
    manager: TokenManager, threads: int, deadline: float | None = None
) -> list[Token | BaseException]:
    barrier = threading.Barrier(threads)
    results: list[Token | BaseException] = []
    lock = threading.Lock()

    def caller() -> None:
        barrier.wait()
        try:
            outcome: Token | BaseException = manager.get_token(deadline=deadline)
        except BaseException as error:  # recorded and asserted on below
            outcome = error
        with lock:
            results.append(outcome)

    workers = [threading.Thread(target=caller) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
        assert not worker.is_alive(), "a waiter hung"
    return results


def test_64_threads_on_a_cold_cache_make_exactly_one_token_request(
    https_server: SandboxServer, https_manager: TokenManager
) -> None:
    results = stampede(https_manager, 64)
    assert len(results) == 64
    assert all(isinstance(r, Token) for r in results)
    assert len({r for r in results}) == 1
    assert https_server.sandbox.stats()["token_requests"] == 1


@pytest.mark.parametrize(
    ("fault", "error_type"),
    [(Fault.status(500), ServerError), (Fault.reset(), TransportError)],
)
def test_a_failing_refresh_wakes_every_fail_fast_waiter_with_a_typed_error(
    https_server: SandboxServer,
    https_manager: TokenManager,
    fault: Fault,
    error_type: type[EightyEightPayError],
) -> None:
    # Hold the request long enough that the other callers are waiting on it, then fail it.
    https_server.sandbox.inject(fault)
    results = stampede(https_manager, 64, deadline=0)
    assert len(results) == 64
    assert all(isinstance(r, error_type) for r in results), {type(r) for r in results}
    assert https_server.sandbox.stats()["token_requests"] == 1


@pytest.mark.parametrize("fault", [Fault.status(500), Fault.reset()])
def test_waiters_share_the_retry_of_a_failed_refresh_within_the_default_deadline(
    https_server: SandboxServer, https_manager: TokenManager, fault: Fault
) -> None:
    https_server.sandbox.inject(fault)
    results = stampede(https_manager, 64)
    assert all(isinstance(r, Token) for r in results), {type(r) for r in results}
    assert len(set(results)) == 1
    assert https_server.sandbox.stats()["token_requests"] == 2


def test_tls_is_verified_against_the_given_ca(https_server: SandboxServer) -> None:
    with (
        TokenManager(
            DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, base_url=https_server.url, store=MemoryStore()
        ) as untrusting,
        pytest.raises(TLSError) as caught,
    ):
        untrusting.get_token()
    assert not caught.value.may_have_been_sent
    assert https_server.sandbox.stats()["token_requests"] == 0


def test_a_charge_over_https(https_server: SandboxServer, https_manager: TokenManager) -> None:
    response = https_manager.request(
        "POST",
        "/api/transactions/charges",
        json={
            "flow": "PAYIN",
            "method_code": "PSE",
            "amount": 25000,
            "currency": "COP",
            "country": "COL",
            "notification_url": "https://merchant.example/hook",
        },
    )
    assert response.status == 200
    assert response.data["status"] == "PENDING"
    assert https_server.sandbox.stats()["charges"] == 1


def test_tls_verification_cannot_be_turned_off_by_the_environment(
    https_server: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Variables that loosen other clients' verification change nothing here, and no
    # argument turns verification off.
    for name, value in (
        ("PYTHONHTTPSVERIFY", "0"),
        ("CURL_CA_BUNDLE", ""),
        ("REQUESTS_CA_BUNDLE", ""),
    ):
        monkeypatch.setenv(name, value)
    with (
        TokenManager(
            DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, base_url=https_server.url, store=MemoryStore()
        ) as manager,
        pytest.raises(TLSError),
    ):
        manager.get_token()
    with pytest.raises(TypeError):
        TokenManager(DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, verify=False)  # type: ignore[call-arg]
    assert https_server.sandbox.stats()["token_requests"] == 0
