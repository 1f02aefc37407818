"""The threaded manager against the in-process emulator with a fake clock: deterministic."""

from __future__ import annotations

import logging
import threading

import pytest

from eightyeightpay import (
    AccessDenied,
    ApiRateLimited,
    InvalidCredentials,
    ManagerClosed,
    RateLimited,
    ServerError,
)
from eightyeightpay.adapters.sync import ThreadBackground, TokenManager
from eightyeightpay.errors import ConfigurationError, ConnectError, ConnectionLost
from eightyeightpay.http import HttpRequest, HttpResponse
from eightyeightpay.plugins.memory import MemoryStore
from eightyeightpay.plugins.sandbox import (
    DEFAULT_API_KEY,
    DEFAULT_MERCHANT_ID,
    SUSPENDED_API_KEY,
    SUSPENDED_MERCHANT_ID,
    Fault,
    SandboxTransport,
)
from eightyeightpay.policy import Policy
from tests.conftest import InProcess

BALANCE = f"/api/balance?id={DEFAULT_MERCHANT_ID}"
CHARGE = {"flow": "PAYIN", "method_code": "PSE", "amount": 10, "currency": "COP", "country": "COL"}


def test_simulated_hour_at_100_calls_a_second(inproc: InProcess) -> None:
    """At most 74 token requests, no expired token, no 429, nobody waits after the first."""
    manager = inproc.manager()
    waited_after_first = 0
    handed_out_unusable = 0
    for tick in range(360_000):
        inproc.clock.advance(0.01)
        before = inproc.stat("token_requests")
        token = manager.get_token()
        if before > 0 and inproc.stat("token_requests") > before:
            waited_after_first += 1
        handed_out_unusable += inproc.clock() >= token.usable_until
        inproc.background.run_pending()  # the refresh-ahead runs "in the background"
        if tick % 2000 == 0:  # the server accepts what the cache hands out
            assert manager.request("POST", BALANCE).status == 200
    assert 60 <= inproc.stat("token_requests") <= 74  # 60 is the floor for 60 s tokens
    assert inproc.stat("rate_limited") == 0
    assert inproc.stat("expired_token_rejections") == 0
    assert inproc.stat("unauthorized") == 0
    assert handed_out_unusable == 0
    assert waited_after_first == 0


def test_two_managers_with_the_same_credentials_share_one_token(inproc: InProcess) -> None:
    a, b = inproc.manager(), inproc.manager()
    assert a.get_token() == b.get_token()
    assert inproc.stat("token_requests") == 1


def test_managers_sharing_a_slot_must_share_the_policy(inproc: InProcess) -> None:
    inproc.manager()
    with pytest.raises(ConfigurationError, match="different policy"):
        inproc.manager(policy=Policy(margin=5))


def test_401_from_the_token_endpoint_names_causes_and_is_not_retried(inproc: InProcess) -> None:
    manager = inproc.manager(api_key="sk_test_not_a_real_key_1234")
    for _ in range(5):
        with pytest.raises(InvalidCredentials) as caught:
            manager.get_token()
        assert "sandbox key" in str(caught.value) and "merchant id" in str(caught.value)
    assert inproc.stat("token_requests") == 1


def test_403_is_access_denied_with_its_documented_causes(inproc: InProcess) -> None:
    manager = inproc.manager(SUSPENDED_API_KEY, SUSPENDED_MERCHANT_ID)
    with pytest.raises(AccessDenied) as caught:
        manager.get_token()
    for cause in ("KYC", "suspended", "allow-list"):
        assert cause in str(caught.value)


def test_429_cool_down_answers_every_caller_at_once_without_a_request(inproc: InProcess) -> None:
    inproc.sandbox.inject(
        Fault.status(
            429,
            body=b'{"status":"Error","code":429,"message":"Rate limit exceeded. '
            b'Please try again later.","retry_after":20}',
        )
    )
    manager = inproc.manager()
    with pytest.raises(RateLimited) as first:
        manager.get_token()  # 20 s do not fit the default deadline: raised at once
    assert first.value.retry_after == pytest.approx(20)
    for _ in range(100):
        inproc.clock.advance(0.1)
        with pytest.raises(RateLimited) as later:
            manager.get_token(deadline=0)
        assert 0 < later.value.retry_after < 20
    assert inproc.stat("token_requests") == 1
    inproc.clock.advance(11)
    assert manager.get_token() is not None
    assert inproc.stat("token_requests") == 2


def test_a_deadline_lets_a_caller_wait_out_the_backoff(inproc: InProcess) -> None:
    inproc.sandbox.inject(Fault.status(500))
    manager = inproc.manager()
    with pytest.raises(ServerError):
        manager.get_token(deadline=0)
    assert manager.get_token(deadline=120) is not None  # its sleep moves the fake clock
    assert inproc.stat("token_requests") == 2


def test_the_default_deadline_rides_out_two_500s(inproc: InProcess) -> None:
    inproc.sandbox.inject(Fault.status(500), times=2)
    manager = inproc.manager()
    start = inproc.clock()
    assert manager.get_token() is not None
    assert inproc.stat("token_requests") == 3
    assert inproc.clock() - start <= manager.policy.deadline


def test_expired_token_answered_with_401_gets_one_new_token_and_one_replay(
    inproc: InProcess,
) -> None:
    skew = [0.0]
    server_clock = SandboxTransport(inproc.sandbox, lambda: inproc.clock() + skew[0])
    manager = inproc.manager(transport=server_clock)
    first = manager.get_token()
    skew[0] = 61.0  # the server's clock runs ahead: the token we still trust expired there
    before_tokens = inproc.stat("token_requests")
    response = manager.request("POST", BALANCE)
    assert response.status == 200
    assert inproc.stat("token_requests") == before_tokens + 1
    assert inproc.stat("expired_token_rejections") == 1
    assert inproc.stat("api_requests") == 2
    assert manager.get_token() != first


def test_a_charge_is_not_replayed_after_a_reset_that_may_have_reached_the_server(
    inproc: InProcess,
) -> None:
    manager = inproc.manager()
    manager.get_token()
    inproc.sandbox.inject(Fault.reset(), path="/api/transactions/charges")
    with pytest.raises(ConnectionLost) as caught:
        manager.request(
            "POST",
            "/api/transactions/charges",
            json=CHARGE,
        )
    assert caught.value.may_have_been_sent
    assert "never replayed" in str(caught.value)
    assert inproc.stat("charges") <= 1 and inproc.stat("api_requests") == 1


def test_a_call_that_was_never_sent_is_sent_once_more(inproc: InProcess) -> None:
    manager = inproc.manager()
    manager.get_token()
    inproc.sandbox.inject(Fault.refuse(), path="/api/transactions/charges")
    response = manager.request(
        "POST",
        "/api/transactions/charges",
        json=CHARGE,
    )
    assert response.status == 200
    assert inproc.stat("charges") == 1


def test_closed_manager_refuses_and_leaves_no_thread_running(inproc: InProcess) -> None:
    before = {t.ident for t in threading.enumerate()}
    manager = inproc.manager(background=ThreadBackground(), store=MemoryStore())
    token = manager.get_token()
    inproc.clock.advance(token.fresh_until - inproc.clock() + 0.01)
    assert manager.get_token() == token  # stale: served, refresh started on the worker
    manager.close()
    assert {t.ident for t in threading.enumerate()} <= before
    with pytest.raises(ManagerClosed):
        manager.request("POST", BALANCE)


def test_from_env_reads_and_trims_the_variables(inproc: InProcess) -> None:
    manager = TokenManager.from_env(
        {
            "EIGHTY_EIGHT_PAY_API_KEY": DEFAULT_API_KEY + " ",
            "EIGHTY_EIGHT_PAY_MERCHANT_ID": DEFAULT_MERCHANT_ID,
        },
        transport=inproc.transport,
        clock=inproc.clock,
        store=MemoryStore(),
    )
    with manager:
        assert manager.get_token().merchant_id == DEFAULT_MERCHANT_ID


def test_a_closed_manager_hands_out_nothing_even_from_its_cache(inproc: InProcess) -> None:
    manager = inproc.manager()
    manager.get_token()
    manager.close()
    with pytest.raises(ManagerClosed):
        manager.get_token()


def test_a_request_that_never_left_does_not_spend_the_rate_budget(inproc: InProcess) -> None:
    manager = inproc.manager()
    for _ in range(12):
        inproc.sandbox.inject(Fault.refuse())
        with pytest.raises(ConnectError):
            manager.get_token(deadline=0)
        inproc.clock.advance(61)  # past any backoff
    slot_window = manager._slot.machine.window
    assert slot_window.count(inproc.clock(), 3600) == 0


def test_a_caller_that_must_wait_runs_the_queued_refresh_itself(inproc: InProcess) -> None:
    """A refresh queued for the background and not started is run by the caller who needs it.

    With a manual background nothing else would ever run it, so the caller would wait for a
    thread that does not exist; with a worker thread it saves the thread's start-up delay.
    """
    manager = inproc.manager()
    first = manager.get_token()
    inproc.clock.advance(first.fresh_until - inproc.clock() + 0.01)
    assert manager.get_token() == first  # stale: served, refresh queued, not started
    assert len(inproc.background.pending) == 1
    inproc.clock.advance(first.usable_until - inproc.clock() + 0.01)
    second = manager.get_token()  # would wait for the queued refresh: runs it instead
    assert second != first and inproc.clock() < second.usable_until
    assert inproc.stat("token_requests") == 2
    inproc.background.run_pending()  # the background finds the job taken and sends nothing
    assert inproc.stat("token_requests") == 2
    assert manager.get_token() == second


def test_closing_the_background_drops_only_a_refresh_nobody_took(inproc: InProcess) -> None:
    manager = inproc.manager()
    first = manager.get_token()
    inproc.clock.advance(first.fresh_until - inproc.clock() + 0.01)
    manager.get_token()  # refresh queued
    inproc.clock.advance(first.usable_until - inproc.clock() + 0.01)
    second = manager.get_token()  # taken and run by this caller
    inproc.background.close()  # drops the queued job: the flight it named has already ended
    assert manager.get_token() == second
    inproc.clock.advance(second.fresh_until - inproc.clock() + 0.01)
    assert manager.get_token() == second  # stale again: a new refresh, dropped at once
    inproc.clock.advance(second.usable_until - inproc.clock() + 0.01)
    assert manager.get_token() != second  # the dropped flight ended; a new one is sent
    assert inproc.stat("token_requests") == 3


def test_a_failing_background_refresh_logs_one_warning_with_the_time_left(
    inproc: InProcess, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="eightyeightpay")
    manager = inproc.manager(policy=Policy(max_hourly_cost=90))  # a 10 s advisory lead
    token = manager.get_token()
    inproc.sandbox.inject(Fault.status(500), times=1000)
    inproc.clock.advance(token.fresh_until - inproc.clock())
    while inproc.clock() < token.usable_until - 0.5:
        assert manager.get_token() == token  # still served while refreshes fail
        inproc.background.run_pending()
        inproc.clock.advance(0.5)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "s left" in warnings[0].getMessage()
    assert inproc.stat("token_requests") >= 3  # the streak had two failures or more
    inproc.clock.advance(token.usable_until - inproc.clock())
    with pytest.raises(ServerError):
        manager.get_token(deadline=0)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "ran out" in errors[0].getMessage()
    inproc.sandbox.clear_faults()
    inproc.clock.advance(60)
    manager.get_token()
    infos = [r for r in caplog.records if r.levelno == logging.INFO]
    assert len(infos) == 1 and "recovered" in infos[0].getMessage()
    for record in caplog.records:
        assert token.access_token not in record.getMessage()
        assert DEFAULT_API_KEY not in record.getMessage()


def test_a_call_that_waited_for_a_connection_is_counted_when_it_reached_88pay(
    inproc: InProcess,
) -> None:
    """The first of 60 calls waits 5 s inside its transport (a pool at its cap) before it
    reaches 88Pay. 60.5 s after its reservation, only 55.5 s after 88Pay counted it, the
    61st call waits for 88Pay's minute to end instead of drawing a 429."""

    class LateFirstCall:
        def __init__(self) -> None:
            self.waited = False

        def send(self, request: HttpRequest, *, timeout: float) -> HttpResponse:
            if not self.waited and "/api/balance" in request.url:
                self.waited = True
                inproc.clock.advance(5.0)  # no connection free for 5 s
            return inproc.transport.send(request, timeout=timeout)

        def close(self) -> None:
            inproc.transport.close()

    manager = inproc.manager(transport=LateFirstCall())
    start = inproc.clock()
    for _ in range(60):
        assert manager.request("POST", BALANCE).status == 200
    assert inproc.clock() == start + 5.0
    inproc.clock.advance(55.5)
    assert manager.request("POST", BALANCE).status == 200
    assert inproc.stat("api_requests") == 61
    assert inproc.stat("rate_limited") == 0
    assert inproc.clock() >= start + 65.0  # it went out once the first call left 88Pay's minute


def test_a_call_that_never_left_gives_its_place_in_the_minute_back(inproc: InProcess) -> None:
    """Three refused connections (nothing reached 88Pay) and a retry, then 59 more calls:
    all 60 calls go out within the minute; the refused attempts count for nothing."""
    inproc.sandbox.inject(Fault.refuse(), path="/api/balance", times=3)
    manager = inproc.manager()
    start = inproc.clock()
    for _ in range(60):
        assert manager.request("POST", BALANCE).status == 200
    assert inproc.stat("api_requests") == 60
    assert inproc.clock() - start < 10  # the first call's backoff only: nobody waited a minute


def test_failures_with_no_token_to_fall_back_on_and_api_429s_are_logged_for_the_operator(
    inproc: InProcess, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="eightyeightpay")
    manager = inproc.manager()
    token = manager.get_token()
    inproc.clock.advance(120)  # a quiet spell: the token lapsed
    inproc.sandbox.inject(Fault.status(429, headers={"Retry-After": "40"}))
    for _ in range(3):  # one WARNING for the streak, not one per caller
        with pytest.raises(RateLimited):
            manager.get_token(deadline=0)
        inproc.clock.advance(5)
    inproc.clock.advance(60)
    inproc.sandbox.inject(Fault.status(401))  # a key revoked: a person must act
    with pytest.raises(InvalidCredentials):
        manager.get_token(deadline=0)
    inproc.clock.advance(120)
    manager.get_token()
    inproc.sandbox.inject(Fault.status(429, headers={"Retry-After": "30"}), path="/api/balance")
    with pytest.raises(ApiRateLimited):
        manager.request("POST", f"/api/balance?id={DEFAULT_MERCHANT_ID}", deadline=0)
    with pytest.raises(ApiRateLimited):  # refused in the cool-down: not logged again
        manager.request("POST", f"/api/balance?id={DEFAULT_MERCHANT_ID}", deadline=0)
    seen = [(r.levelname, r.getMessage()) for r in caplog.records if r.levelno >= logging.INFO]
    assert [level for level, _ in seen] == ["WARNING", "ERROR", "INFO", "WARNING"], seen
    assert "failed (RateLimited) with no usable token" in seen[0][1]
    assert "failed (InvalidCredentials) with no usable token" in seen[1][1]
    assert "recovered after 2 failed attempt(s)" in seen[2][1]
    assert "answered an API call" in seen[3][1] and "for 30.0 s" in seen[3][1]
    assert all(DEFAULT_MERCHANT_ID in message for _, message in seen)
    for record in caplog.records:
        assert token.access_token not in record.getMessage()
        assert DEFAULT_API_KEY not in record.getMessage()


def test_api_429s_less_than_a_minute_apart_are_one_streak_and_one_warning(
    inproc: InProcess, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="eightyeightpay")
    manager = inproc.manager()
    manager.get_token()
    balance = f"/api/balance?id={DEFAULT_MERCHANT_ID}"

    def drawn_429s(count: int) -> None:
        for _ in range(count):  # no Retry-After: a 1 s cool-down, then a 429 again
            inproc.sandbox.inject(Fault.status(429), path="/api/balance")
            with pytest.raises(ApiRateLimited):
                manager.request("POST", balance, deadline=0)
            inproc.clock.advance(2)

    drawn_429s(20)  # 40 s of a limit spent elsewhere: one streak
    assert len(caplog.records) == 1, [r.getMessage() for r in caplog.records]
    inproc.clock.advance(61)  # a quiet minute ends it
    drawn_429s(1)
    assert len(caplog.records) == 2


@pytest.mark.parametrize("headers", [{"Retry-After": "0"}, {"Retry-After": "172800"}, {}])
def test_a_token_429_without_a_usable_wait_says_the_wait_it_keeps(
    inproc: InProcess, headers: dict[str, str]
) -> None:
    manager = inproc.manager()
    inproc.sandbox.inject(Fault.status(429, headers=headers))
    with pytest.raises(RateLimited) as caught:
        manager.get_token(deadline=0)
    error = caught.value
    assert not error.local and 0 < error.retry_after <= 1.0  # the first backoff
    assert f"retry after {error.retry_after:.1f} s" in str(error)
    assert manager.stats().next_request_in == pytest.approx(error.retry_after)
