"""Deterministic scenarios of the token machine (no clock, no sockets)."""

from __future__ import annotations

import pytest

from eightyeightpay import InvalidCredentials, Policy, RateLimited, ServerError
from eightyeightpay.http import HttpResponse
from eightyeightpay.machine import (
    Decision,
    Exchange,
    Refresh,
    Serve,
    ServeAndRefresh,
    Settled,
    TokenMachine,
    Unavailable,
    Wait,
)
from tests.support import CREDENTIALS, error_response, ok_response, rng


def settle(
    machine: TokenMachine, decision: Decision, response: HttpResponse, now: float
) -> Settled:
    assert isinstance(decision, Refresh | ServeAndRefresh)
    steps = machine.refresh(decision.flight)
    next(steps)
    with pytest.raises(StopIteration) as stop:
        steps.send(Exchange(response, None, now))
    return stop.value.value  # type: ignore[no-any-return]


def test_first_caller_refreshes_others_wait_then_all_are_served_from_cache() -> None:
    machine = TokenMachine(CREDENTIALS, Policy(), rng())
    first = machine.decide_and_start(0.0)
    assert isinstance(first, Refresh)
    assert isinstance(machine.decide_and_start(0.1), Wait)
    settled = settle(machine, first, ok_response(1), 0.2)
    assert settled.token is not None
    assert machine.decide_and_start(1.0) == Serve(settled.token)


def test_stale_token_is_served_while_exactly_one_background_refresh_starts() -> None:
    machine = TokenMachine(CREDENTIALS, Policy(), rng())
    token = settle(machine, machine.decide_and_start(0.0), ok_response(1), 0.1).token
    assert token is not None
    stale_at = token.fresh_until
    decision = machine.decide_and_start(stale_at)
    assert isinstance(decision, ServeAndRefresh) and decision.token == token
    assert machine.decide_and_start(stale_at + 0.01) == Serve(token)
    newer = settle(machine, decision, ok_response(2), stale_at + 0.2).token
    assert machine.decide_and_start(stale_at + 0.3) == Serve(newer)  # type: ignore[arg-type]


def test_401_is_not_retried_and_is_remembered_during_its_backoff() -> None:
    machine = TokenMachine(CREDENTIALS, Policy(), rng())
    settled = settle(
        machine,
        machine.decide_and_start(0.0),
        error_response(401, "Invalid API key or merchant ID"),
        0.1,
    )
    assert isinstance(settled.error, InvalidCredentials)
    again = machine.decide_and_start(0.2)
    assert isinstance(again, Unavailable) and isinstance(again.error, InvalidCredentials)
    assert machine.sent == 1


def test_429_cool_down_answers_callers_without_another_request() -> None:
    machine = TokenMachine(CREDENTIALS, Policy(), rng())
    settle(
        machine,
        machine.decide_and_start(0.0),
        error_response(429, "Rate limit exceeded.", retry_after=40),
        0.1,
    )
    for t in (0.2, 10.0, 39.0):
        decision = machine.decide_and_start(t)
        assert isinstance(decision, Unavailable)
        assert isinstance(decision.error, RateLimited) and decision.error.local
        assert decision.error.retry_after == pytest.approx(40.1 - t)
    assert machine.sent == 1
    assert isinstance(machine.decide_and_start(40.2), Refresh)


def test_usable_token_keeps_being_served_through_failures() -> None:
    machine = TokenMachine(CREDENTIALS, Policy(), rng())
    token = settle(machine, machine.decide_and_start(0.0), ok_response(1), 0.0).token
    refresh = machine.decide_and_start(token.fresh_until)  # type: ignore[union-attr]
    assert isinstance(refresh, ServeAndRefresh)
    failed = settle(machine, refresh, error_response(500, "boom"), token.fresh_until + 0.1)  # type: ignore[union-attr]
    assert isinstance(failed.error, ServerError)
    assert machine.decide_and_start(token.fresh_until + 0.2) == Serve(token)  # type: ignore[arg-type, union-attr]


def test_governor_refuses_the_eleventh_request_in_a_minute() -> None:
    machine = TokenMachine(CREDENTIALS, Policy(), rng())
    for i in range(10):
        decision = machine.decide_and_start(float(i))
        assert isinstance(decision, Refresh)
        token = settle(machine, decision, ok_response(i), float(i)).token
        assert token is not None and machine.invalidate(token)
    decision = machine.decide_and_start(10.0)
    assert isinstance(decision, Unavailable) and isinstance(decision.error, RateLimited)
    assert decision.error.local and decision.retry_at == 60.0


def test_invalidate_never_drops_a_newer_token() -> None:
    machine = TokenMachine(CREDENTIALS, Policy(), rng())
    old = settle(machine, machine.decide_and_start(0.0), ok_response(1), 0.0).token
    assert old is not None and machine.invalidate(old)
    new = settle(machine, machine.decide_and_start(1.0), ok_response(2), 1.0).token
    assert not machine.invalidate(old)
    assert machine.token == new
