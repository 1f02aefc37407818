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
from eightyeightpay.plugins.sandbox import DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, FakeClock
from eightyeightpay.stats import OUTCOMES, Tally, outcome_of
from tests.fleet_sim import SimStore
from tests.support import CREDENTIALS, error_response, local_wait, rng
from tests.unit.test_fleet_api_budget import run
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


def test_the_api_calls_spend_against_the_api_limits() -> None:
    """This process's API sends in the rolling minute and hour, against 60 and 1,000."""
    machine = TokenMachine(CREDENTIALS, Policy(), rng())
    for at in (0.0, 10.0, 70.0):
        assert local_wait(machine.reserve_api(at)) == 0
    stats = machine.stats(75.0)
    assert (stats.api_minute_spent, stats.api_hour_spent) == (1, 3)
    assert (stats.api_per_minute, stats.api_per_hour) == (60, 1000)
    assert (stats.api_minute_remaining, stats.api_hour_remaining) == (59, 997)
    assert stats.api_cool_down_remaining == 0 and stats.api_budget_scope == "process"
    assert stats.summary().endswith("; API calls 1/60 this minute, 3/1000 this hour")
    assert (stats.minute_spent, stats.token_requests) == (0, 0)  # no token request counted
    data = stats.as_dict()
    assert (data["api_minute_remaining"], data["api_hour_remaining"]) == (59, 997)
    assert data["api_budget_scope"] == "process"
    fleet = stats.with_fleet_api_spend(50, 400)
    assert (fleet.api_minute_remaining, fleet.api_hour_remaining) == (10, 600)
    assert fleet.api_budget_scope == "fleet" and fleet.fleet_minute_spent is None
    assert "(fleet: 50/60 this minute, 400/1000 this hour)" in fleet.summary()


def test_an_api_429s_cool_down_leaves_no_api_budget_until_it_ends() -> None:
    machine = TokenMachine(CREDENTIALS, Policy(), rng())
    local_wait(machine.reserve_api(0.0))
    local_wait(machine.api_cool_down(1.0, 30.0))  # 88Pay answered it 429, Retry-After: 30
    cooling = machine.stats(11.0)
    assert cooling.api_cool_down_remaining == pytest.approx(20.0)
    assert (cooling.api_minute_remaining, cooling.api_hour_remaining) == (0, 0)
    assert cooling.cool_down_remaining == 0  # token requests are not held back
    assert (cooling.minute_remaining, cooling.hour_remaining) == (10, 100)
    assert "API 429 cool-down 20 s left" in cooling.summary()
    over = machine.stats(31.0)
    assert over.api_cool_down_remaining == 0 and "cool-down" not in over.summary()
    assert over.api_minute_remaining == 59


def test_the_fleets_api_cool_down_shows_in_the_stats_of_the_processes_it_holds_back() -> None:
    clock = FakeClock()
    store = SimStore(clock)
    hit, held = (
        TokenMachine(CREDENTIALS, Policy(), rng(), fleet=True, instance=name)
        for name in ("hit", "held")
    )
    run(hit.api_cool_down(clock(), 12.0), store, clock)
    assert held.stats(clock()).api_cool_down_remaining == 0  # not read yet
    clock.advance(2.0)
    assert run(held.reserve_api(clock()), store, clock) == 10.0
    assert held.stats(clock()).api_cool_down_remaining == 10.0


def test_a_policy_without_api_limits_shows_none() -> None:
    policy = Policy(api_per_minute=None, api_per_hour=None)
    stats = TokenMachine(CREDENTIALS, policy, rng()).stats(0.0)
    assert (stats.api_per_minute, stats.api_minute_remaining, stats.api_hour_remaining) == (
        None,
        None,
        None,
    )
    assert "API calls 0/no limit this minute, 0/no limit this hour" in stats.summary()
