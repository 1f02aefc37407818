"""A fleet that starts while its store is unreachable or misconfigured, deterministic: a
process that never reached the store has never learnt how many processes share the
merchant's budget, and keeps to a share of ``Policy.assumed_fleet_size`` instead of taking
itself to be alone (each process alone would spend the whole budget: 429s, then a lock-out
of most of an hour)."""

from __future__ import annotations

import random

import pytest

from eightyeightpay.errors import InvalidPolicy, RateLimited
from eightyeightpay.fleet import BudgetResult, ReadShared, SharedRead, StoreFault
from eightyeightpay.machine import Result, TokenMachine
from eightyeightpay.policy import Policy
from tests.unit.test_degraded_fleet import CREDENTIALS, Fleet


def most_in_any(sends: list[float], span: float) -> int:
    """The most sends in any ``span`` seconds (each window starting at a send)."""
    return max((sum(1 for u in sends if t <= u < t + span) for t in sends), default=0)


@pytest.mark.parametrize(
    ("stalls", "misconfigured"),
    [(False, False), (True, False), (False, True)],
    ids=["failing-fast", "stalling", "misconfigured"],
)
def test_a_fleet_that_never_reaches_its_store_stays_within_the_budget(
    stalls: bool, misconfigured: bool
) -> None:
    """8 processes on 88Pay's limits compressed 10 times (10 per 6 s, 100 per 360 s), the
    store failing from the start, for a compressed hour and a half. Each process took
    itself to be alone and spent the whole budget: 429s within the first minute."""
    policy = Policy().compressed(10)
    fleet = Fleet(8, policy, seed=11)
    fleet.store.down, fleet.store.stalls = True, stalls
    fleet.store.misconfigured = misconfigured
    fleet.run(540.0, step=0.1)
    sends = sorted(t for t, _ in fleet.sends)
    assert fleet.sandbox.stats()["rate_limited"] == 0
    assert most_in_any(sends, policy.minute_span) <= policy.per_minute
    assert most_in_any(sends, policy.hour_span) <= policy.per_hour
    # Each process keeps to 1 of 10 per 6 s and 10 of 100 per 360 s (a fleet of 10 assumed).
    assert all(p.machine.members == 10 for p in fleet.processes)
    assert all(1 <= p.machine.sent <= 20 for p in fleet.processes)  # 10 per 360 s, 540 s run
    # Callers its share cannot serve get the local error, before anything is sent.
    assert fleet.failed and all(
        isinstance(error, RateLimited) and error.local for error in fleet.failed
    )


def test_a_fleet_that_reaches_its_store_later_uses_the_count() -> None:
    """Once the store has counted the fleet, the count replaces the assumed size: 8
    processes keep to 10 // 8 = 1 per 6 s and 100 // 8 = 12 per 360 s each."""
    policy = Policy().compressed(10)
    fleet = Fleet(8, policy, seed=12)
    fleet.store.down = True
    fleet.run(10.0, step=0.1)
    assert all(p.machine.members == 10 for p in fleet.processes)
    fleet.store.down = False
    fleet.run(20.0, step=0.1)
    assert all(p.machine.members == 8 for p in fleet.processes)
    assert not any(p.machine.degraded for p in fleet.processes)
    assert fleet.sandbox.stats()["rate_limited"] == 0


def test_a_process_counted_alone_keeps_the_whole_budget() -> None:
    """The assumed size applies only until the store has counted: a process the store
    counted alone keeps all of each limit while the store is down (1 per 6 s is not its
    share, 10 is)."""
    policy = Policy().compressed(10)
    fleet = Fleet(1, policy, seed=13)
    fleet.run(8.0)
    assert fleet.processes[0].machine.members == 1
    fleet.store.down = True
    fleet.run(30.0, step=0.05)
    alone = sorted(t for t, degraded in fleet.sends if degraded)
    assert most_in_any(alone, policy.minute_span) >= 2
    assert fleet.failed == []


def test_a_misconfigured_store_is_not_waited_for() -> None:
    """A store that refuses the configuration (a wrong password) is not ridden out as a
    failover is (3 s): the first caller's token request goes at once, alone."""
    fleet = Fleet(1, Policy().compressed(10), seed=14)
    fleet.store.down, fleet.store.misconfigured = True, True
    fleet.run(0.2, step=0.05)
    assert len(fleet.sends) == 1 and fleet.sends[0][1]  # sent alone, within 0.2 s


def test_a_store_failing_fast_at_start_is_ridden_out_first() -> None:
    """The other side of the test above: a store refusing connections may be restarting,
    so the grace for a failover applies (a token request alone only after it)."""
    fleet = Fleet(1, Policy().compressed(10), seed=14)
    fleet.store.down = True
    fleet.run(2.0, step=0.05)
    assert fleet.sends == []


def _reserve_api(machine: TokenMachine, now: float, *, up: bool) -> float:
    """Run one API call's reservation at ``now``, the store answering (``up``) or failing."""
    steps = machine.reserve_api(now)
    try:
        effect = next(steps)
        for _ in range(10):
            answer: Result = StoreFault("ConnectionError", now)
            if up and isinstance(effect, ReadShared):
                answer = SharedRead(None, 0.0, 0.0, now)
            elif up:
                answer = BudgetResult(0.0, now, "epoch-1")
            effect = steps.send(answer)
    except StopIteration as done:
        return float(done.value)
    raise AssertionError("the reservation did not end")


def test_an_api_answer_from_the_store_ends_degraded_mode() -> None:
    """The store answering an API call's reservation is its return, as the driver logs it:
    stats() no longer says degraded (it did until a token refresh read through it, which a
    429's cool-down can hold off for most of an hour)."""
    machine = TokenMachine(CREDENTIALS, Policy(), random.Random(1), fleet=True)
    machine.degraded, machine.degraded_since = True, 5.0
    _reserve_api(machine, 10.0, up=False)
    assert machine.stats(10.0).store_mode == "degraded"  # a fault does not end it
    _reserve_api(machine, 12.0, up=True)
    stats = machine.stats(12.0)
    assert stats.store_mode == "healthy" and stats.degraded_since is None


def test_the_assumed_fleet_size_is_validated_and_kept_by_compression() -> None:
    assert Policy().assumed_fleet_size == 10
    assert Policy().compressed(10).assumed_fleet_size == 10
    assert Policy(assumed_fleet_size=3).compressed(60).assumed_fleet_size == 3
    for bad in (0, -1, True, 2.5, "8", None):
        with pytest.raises(InvalidPolicy, match="assumed_fleet_size"):
            Policy(assumed_fleet_size=bad)  # type: ignore[arg-type]
