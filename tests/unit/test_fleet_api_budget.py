"""The fleet's API budget and its recovery, deterministic: machines sharing one simulated
store reserve API calls from the fleet's budget on the store's clock; when the store is down
each keeps to its share; when the store comes back, or restarts empty (a new budget epoch),
each puts its own sends back, so the fleet's calls never break 88Pay's 60 a minute."""

from __future__ import annotations

import random
from collections.abc import Generator

from hypothesis import given, settings
from hypothesis import strategies as st

from eightyeightpay.fleet import (
    API_BUDGET,
    BudgetRequest,
    FleetEffect,
    ReadShared,
    StoreBudget,
    WriteCooldown,
    api_calls_key,
)
from eightyeightpay.governor import RateWindow
from eightyeightpay.machine import BUDGET_SETTLE, STORE_PROBE_INTERVAL, Result, TokenMachine
from eightyeightpay.plugins.sandbox import FakeClock
from eightyeightpay.policy import Policy
from tests.fleet_sim import SimStore, perform
from tests.support import CREDENTIALS

LIMIT = 60  # 88Pay's API calls per minute (Policy.api_per_minute)


def reserve(machine: TokenMachine, store: SimStore, clock: FakeClock) -> float:
    """One API reservation at the clock's time, its store effects performed on ``store``."""
    return run(machine.reserve_api(clock()), store, clock)


def answered_429(machine: TokenMachine, store: SimStore, clock: FakeClock, seconds: float) -> float:
    """88Pay answered ``machine``'s API call 429 with ``seconds`` to cool down."""
    return run(machine.api_cool_down(clock(), seconds), store, clock)


def run(steps: Generator[FleetEffect, Result, float], store: SimStore, clock: FakeClock) -> float:
    """The governor's answer, its store effects performed on ``store``."""
    try:
        effect = next(steps)
        while True:
            effect = steps.send(perform(store, effect, clock))
    except StopIteration as done:
        return float(done.value)


def most_in_a_minute(sends: list[float]) -> int:
    """The most sends in any rolling 60 s, counted at each send."""
    ordered = sorted(sends)
    return max((sum(1 for s in ordered if t - 60 < s <= t) for t in ordered), default=0)


class Fleet:
    def __init__(self, count: int, seed: int) -> None:
        self.clock = FakeClock()
        self.store = SimStore(self.clock)
        self.machines = [
            TokenMachine(
                CREDENTIALS, Policy(), random.Random(seed + i), fleet=True, instance=f"p{i}"
            )
            for i in range(count)
        ]
        self.sends: list[float] = []

    def call(self, index: int) -> bool:
        if reserve(self.machines[index], self.store, self.clock) == 0:
            self.sends.append(self.clock())
            return True
        return False


@settings(max_examples=60, deadline=None)
@given(
    count=st.integers(2, 8),
    calls=st.lists(st.tuples(st.integers(0, 7), st.floats(0.0, 3.0)), min_size=10, max_size=150),
    restart=st.integers(0, 149),
    seed=st.integers(0, 1000),
)
def test_the_fleets_api_calls_keep_the_limit_across_a_store_restart(
    count: int, calls: list[tuple[int, float]], restart: int, seed: int
) -> None:
    """Random bursts from several processes, the store restarted empty at some call; after
    it every process calls once within the settle time (they are active): never more than
    60 calls in any minute, fleet-wide."""
    fleet = Fleet(count, seed)
    for n, (index, pause) in enumerate(calls):
        if n == restart:
            fleet.store.restart()
            for each in range(count):  # every process active right after the restart
                fleet.call(each)
                fleet.clock.advance(BUDGET_SETTLE / (2 * count))
        fleet.call(index % count)
        fleet.clock.advance(pause)
    assert most_in_a_minute(fleet.sends) <= LIMIT


def test_a_burst_from_eight_processes_sends_the_fleets_60_and_no_more() -> None:
    fleet = Fleet(8, 1)
    sent = sum(fleet.call(i % 8) for i in range(120))
    assert sent == LIMIT
    assert fleet.store.budgets[API_BUDGET].sends.count(fleet.clock(), 60) == LIMIT


def test_a_store_restarted_empty_gets_the_fleets_60_back_and_lets_nothing_more_through() -> None:
    """The hazard the epochs guard against: the store forgets 60 sends, and the machines'
    own windows (a process's 7 or 8) would let 60 more through unless they are put back."""
    fleet = Fleet(8, 2)
    assert sum(fleet.call(i % 8) for i in range(60)) == LIMIT
    fleet.store.restart()
    fleet.clock.advance(1)
    for i in range(8):
        fleet.call(i)
    fleet.clock.advance(BUDGET_SETTLE)
    assert sum(fleet.call(i % 8) for i in range(60)) == 0
    assert fleet.store.budgets[API_BUDGET].sends.count(fleet.clock(), 60) == LIMIT


def test_store_down_each_keeps_its_share_and_the_sends_are_put_back() -> None:
    fleet = Fleet(4, 3)
    for machine in fleet.machines:
        machine.members = 4  # learnt while the store was up
    fleet.store.down = True
    sent_down = sum(fleet.call(i % 4) for i in range(80))
    assert sent_down == 4 * (LIMIT // 4)  # each its share of 15
    assert all(m.api_alone for m in fleet.machines)
    fleet.store.down = False
    fleet.clock.advance(1.0)  # the next call tries the store again (STORE_PROBE_INTERVAL)
    assert sum(fleet.call(i % 4) for i in range(40)) == 0
    assert not any(m.api_alone for m in fleet.machines)
    assert fleet.store.budgets[API_BUDGET].sends.count(fleet.clock(), 60) == LIMIT


@settings(max_examples=100, deadline=None)
@given(
    times=st.lists(st.floats(0, 400), min_size=1, max_size=80).map(sorted),
    per_minute=st.integers(1, 10),
    per_hour=st.integers(1, 30),
)
def test_a_store_budget_never_records_past_its_limits(
    times: list[float], per_minute: int, per_hour: int
) -> None:
    budget, recorded = StoreBudget(), []
    budget, _ = budget.reserve(BudgetRequest(API_BUDGET, per_minute, per_hour), 0.0, "e1")
    ask = BudgetRequest(API_BUDGET, per_minute, per_hour, 6.0, 360.0, "e1")
    for t in times:
        budget, wait = budget.reserve(ask, t, "unused")
        if wait == 0:
            recorded.append(t)
        else:
            assert t + wait == RateWindow(tuple(recorded)).next_allowed(
                t, per_minute, per_hour, 6.0, 360.0
            )
    for t in recorded:
        assert sum(1 for s in recorded if t - 6 < s <= t) <= per_minute
        assert sum(1 for s in recorded if t - 360 < s <= t) <= per_hour


def test_a_store_budget_records_nothing_under_another_epoch_and_backfills_under_its_own() -> None:
    budget, wait = StoreBudget().reserve(BudgetRequest(API_BUDGET, 2, 10), 100.0, "e1")
    assert (budget.epoch, wait, budget.sends.sends) == ("e1", 0.0, ())
    stale = BudgetRequest(API_BUDGET, 2, 10, epoch="e0", backfill=(5.0,))
    assert budget.reserve(stale, 100.0, "unused") == (budget, 0.0)
    back = BudgetRequest(API_BUDGET, 2, 10, epoch="e1", backfill=(5.0, 50.0, 5000.0))
    after, wait = budget.reserve(back, 100.0, "unused")
    assert after.sends.sends == (50.0, 95.0)  # 5000 s ago: past the hour; nothing new
    assert wait == 10.0  # until the send put back 50 s ago leaves the minute


# --------------------------------------------------------------------------- the API 429


def test_an_api_429_in_one_process_holds_every_process_of_the_fleet_back() -> None:
    """Process 0 is answered 429 with 5 s to cool down: no process is let send before the
    5 s are over (each is told the time left), and every process may send after them."""
    fleet = Fleet(4, 5)
    assert fleet.call(0)
    answered_429(fleet.machines[0], fleet.store, fleet.clock, 5.0)
    fleet.clock.advance(1.5)
    waits = [reserve(machine, fleet.store, fleet.clock) for machine in fleet.machines]
    assert waits == [3.5] * 4
    fleet.clock.advance(3.0)  # still 0.5 s to go: the processes keep what they read
    assert [reserve(m, fleet.store, fleet.clock) for m in fleet.machines] == [0.5] * 4
    fleet.clock.advance(0.5)
    assert all(fleet.call(i) for i in range(4))


def test_the_api_cool_down_is_written_and_read_under_the_api_calls_own_key() -> None:
    """The token's cool-down mechanism, on a key of its own: an API 429 holds back no
    token request, and a token 429 holds back no API call."""
    machine = TokenMachine(CREDENTIALS, Policy(), random.Random(1), fleet=True)
    key = api_calls_key(CREDENTIALS.cache_key)
    assert key != CREDENTIALS.cache_key and key.merchant_id == CREDENTIALS.merchant_id
    assert next(machine.api_cool_down(0.0, 2.0)) == WriteCooldown(key, 2.0)
    other = TokenMachine(CREDENTIALS, Policy(), random.Random(2), fleet=True)
    assert next(other.reserve_api(0.0)) == ReadShared(key)
    store = SimStore(FakeClock())
    store.cool_down(CREDENTIALS.cache_key, 30.0)  # the token endpoint's 429
    assert store.read(CREDENTIALS.cache_key)[2] == 30.0 and store.read(key)[2] == 0.0
    assert reserve(other, store, FakeClock()) == 0.0


def test_a_store_failing_keeps_the_api_cool_down_this_processs_own_and_raises_nothing() -> None:
    fleet = Fleet(2, 6)
    fleet.store.down = True
    assert answered_429(fleet.machines[0], fleet.store, fleet.clock, 4.0) == fleet.clock()
    assert reserve(fleet.machines[0], fleet.store, fleet.clock) == 4.0  # its own, kept
    assert fleet.store.cooldowns == {}  # the fleet never learnt it
    fleet.clock.advance(4.0)
    assert reserve(fleet.machines[0], fleet.store, fleet.clock) == 0.0  # its share, alone
    assert fleet.machines[0].api_alone


def test_a_store_failing_on_the_cool_down_read_falls_back_to_the_share() -> None:
    """A reservation whose read of the fleet's cool-down fails works alone (its share,
    then the store again after STORE_PROBE_INTERVAL), as when the budget fails."""
    fleet = Fleet(2, 7)
    for machine in fleet.machines:
        machine.members = 2
    fleet.store.down = True
    assert sum(fleet.call(0) for _ in range(40)) == LIMIT // 2
    fleet.store.down = False
    answered_429(fleet.machines[1], fleet.store, fleet.clock, 60.0)
    fleet.clock.advance(STORE_PROBE_INTERVAL)
    assert reserve(fleet.machines[0], fleet.store, fleet.clock) == 60.0 - STORE_PROBE_INTERVAL
    assert not fleet.machines[0].api_alone


@settings(max_examples=80, deadline=None)
@given(
    count=st.integers(2, 6),
    steps=st.lists(
        st.tuples(st.integers(0, 5), st.floats(0.0, 2.0), st.none() | st.floats(0.5, 30.0)),
        min_size=5,
        max_size=60,
    ),
    seed=st.integers(0, 1000),
)
def test_no_process_sends_an_api_call_during_the_fleets_cool_down(
    count: int, steps: list[tuple[int, float, float | None]], seed: int
) -> None:
    """Random calls from several processes, some answered 429 with a random cool-down:
    no call is let through while a cool-down any process received is running."""
    fleet = Fleet(count, seed)
    cooling_until = 0.0
    for index, pause, answer in steps:
        if fleet.call(index % count):
            assert fleet.clock() >= cooling_until
            if answer is not None:
                answered_429(fleet.machines[index % count], fleet.store, fleet.clock, answer)
                cooling_until = max(cooling_until, fleet.clock() + answer)
        fleet.clock.advance(pause)
