"""The core's counts: Tally, outcome_of and TokenMachine.stats(), deterministic."""

from __future__ import annotations

import random

import pytest

from eightyeightpay import (
    AccessDenied,
    ConnectionLost,
    Credentials,
    InvalidCredentials,
    MalformedResponse,
    Policy,
    RateLimited,
    Refresh,
    RequestTimeout,
    ServerError,
    TokenMachine,
)
from eightyeightpay.plugins.sandbox import DEFAULT_API_KEY, DEFAULT_MERCHANT_ID
from eightyeightpay.stats import OUTCOMES, Tally, outcome_of
from tests.support import CREDENTIALS, error_response, rng
from tests.unit.test_machine import settle


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        (None, "ok"),
        (RateLimited(3, local=False), "rate_limited"),
        (InvalidCredentials(), "invalid_credentials"),
        (AccessDenied(), "access_denied"),
        (ServerError(502), "server_error"),
        (RequestTimeout("h", 1, may_have_been_sent=True), "timeout"),
        (ConnectionLost("h", "reset"), "transport_error"),
        (MalformedResponse("x"), "malformed_response"),
    ],
)
def test_each_ending_has_its_outcome(error: object, outcome: str) -> None:
    assert outcome_of(error) == outcome  # type: ignore[arg-type]
    tally = Tally().sent().ended(error)  # type: ignore[arg-type]
    assert dict(zip(OUTCOMES, tally.outcomes, strict=True))[outcome] == 1
    assert sum(tally.outcomes) == tally.token_requests == 1


def test_only_a_429_from_88pay_counts_as_received() -> None:
    tally = Tally().ended(RateLimited(3, local=False)).ended(RateLimited(3, local=True))
    assert tally.rate_limited == 1


def test_a_tally_is_a_new_value_each_time() -> None:
    first = Tally()
    second = first.sent().caller_waited().token_rejected()
    assert first == Tally() and (second.token_requests, second.waited, second.rejected) == (1, 1, 1)


def test_stats_of_a_machine_at_now() -> None:
    machine = TokenMachine(
        Credentials(DEFAULT_API_KEY, DEFAULT_MERCHANT_ID), Policy(), random.Random(0)
    )
    stats = machine.stats(100.0)
    assert stats.token_requests == 0 and stats.token_remaining is None
    assert stats.minute_remaining == 10 and stats.hour_remaining == 100
    assert stats.store_mode == "local" and stats.degraded_for is None
    assert DEFAULT_API_KEY not in repr(stats) and DEFAULT_API_KEY not in str(stats.as_dict())
    machine.decide_and_start(100.0)  # a caller with no token waits for a refresh
    assert machine.stats(100.0).waited == 1 and machine.stats(100.0).refreshing


@pytest.mark.parametrize("ending", ["abort", "fail"])
def test_a_send_that_never_comes_back_still_has_an_outcome(ending: str) -> None:
    machine = TokenMachine(
        Credentials(DEFAULT_API_KEY, DEFAULT_MERCHANT_ID), Policy(), random.Random(0)
    )
    decision = machine.decide_and_start(100.0)
    assert isinstance(decision, Refresh)
    next(machine.refresh(decision.flight))  # the request is out
    if ending == "abort":  # cancelled, or the manager closed
        machine.abort(decision.flight)
        expected = "abandoned"
    else:  # a broken transport plugin: the driver fails the flight
        machine.fail(decision.flight, ConnectionLost("h", "boom"), now=101.0)
        expected = "transport_error"
    stats = machine.stats(101.0)
    assert stats.token_requests == 1 and stats.outcome(expected) == 1
    assert sum(count for _, count in stats.outcomes) == 1
    machine.abort(decision.flight)  # again: nothing more is counted
    assert machine.stats(101.0).outcomes == stats.outcomes


def test_a_429s_cool_down_leaves_no_budget_until_it_ends() -> None:
    # 88Pay answered 429 (retry after 40 s) to the one request sent: nothing is sent before
    # 40.1, so nothing is left to spend until then, whichever of its limits 88Pay applied.
    machine = TokenMachine(CREDENTIALS, Policy(), rng())
    refused = error_response(429, "Rate limit exceeded.", retry_after=40)
    settle(machine, machine.decide_and_start(0.0), refused, 0.1)
    cooling = machine.stats(10.0)
    assert cooling.cool_down_remaining == pytest.approx(30.1)
    assert cooling.minute_spent == 1 and cooling.next_request_in == pytest.approx(30.1)
    assert (cooling.minute_remaining, cooling.hour_remaining) == (0, 0)
    data = cooling.as_dict()
    assert (data["minute_remaining"], data["hour_remaining"]) == (0, 0)
    assert data["cool_down_remaining"] == pytest.approx(30.1)
    assert "429 cool-down 30 s left" in cooling.summary()
    fleet = cooling.with_fleet_spend(3, 3)  # the fleet's spend does not lift it either
    assert (fleet.minute_remaining, fleet.hour_remaining) == (0, 0)
    over = machine.stats(40.1)
    assert over.cool_down_remaining == 0 and "cool-down" not in over.summary()
    assert (over.minute_remaining, over.hour_remaining) == (9, 99)


def test_a_backoff_after_a_server_error_is_no_cool_down() -> None:
    # A 502 spends no budget of 88Pay's: the backoff delays the next send, the budget stays.
    machine = TokenMachine(CREDENTIALS, Policy(), rng())
    settle(machine, machine.decide_and_start(0.0), error_response(502, "Bad gateway"), 0.1)
    stats = machine.stats(0.2)
    assert stats.next_request_in > 0 and stats.cool_down_remaining == 0
    assert (stats.minute_remaining, stats.hour_remaining) == (9, 99)
