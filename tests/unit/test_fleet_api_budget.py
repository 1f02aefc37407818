"""The fleet's API budget and its recovery, deterministic: machines sharing one simulated
store reserve API calls from the fleet's budget on the store's clock; when the store is down
each keeps to its share; when the store comes back, or restarts empty (a new budget epoch),
each puts its own sends back, so the fleet's calls never break 88Pay's 60 a minute."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from eightyeightpay.fleet import API_BUDGET, BudgetRequest, StoreBudget
from eightyeightpay.governor import RateWindow
from eightyeightpay.machine import BUDGET_SETTLE, TokenMachine
from eightyeightpay.plugins.sandbox import FakeClock
from eightyeightpay.policy import Policy
from tests.fleet_sim import SimStore, perform
from tests.support import CREDENTIALS

LIMIT = 60  # 88Pay's API calls per minute (Policy.api_per_minute)


def reserve(machine: TokenMachine, store: SimStore, clock: FakeClock) -> float:
    """One API reservation at the clock's time, its store effects performed on ``store``."""
    steps = machine.reserve_api(clock())
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
