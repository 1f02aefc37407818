"""A compressed policy compresses the API calls' limits too, deterministic.

``Policy.compressed(factor)`` divides the spans of every rate window, the API calls' as
well as the token requests': a time-compressed test compresses every limit in proportion
and never grants a burst the real API would not. With ``Policy().compressed(10)`` the API
governor allows 60 calls per 6 s and 1,000 per 360 s, alone, in a fleet store's budget
(the spans travel in the ``BudgetRequest``), and in a process's share while the store is
down; ``stats()`` counts over the same windows.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from eightyeightpay.fleet import API_BUDGET, FleetEffect, ReserveFleetBudget
from eightyeightpay.machine import Result, TokenMachine
from eightyeightpay.plugins.sandbox import FakeClock
from eightyeightpay.policy import Policy
from tests.fleet_sim import SimStore, perform
from tests.support import CREDENTIALS, ScanningWindow, local_wait, rng

FAST = Policy().compressed(10)  # 6 s tokens; 60 API calls per 6 s, 1,000 per 360 s


def reservations(
    machine: TokenMachine, store: SimStore, clock: FakeClock
) -> tuple[float, list[FleetEffect]]:
    """One API reservation at the clock's time on ``store``: its wait and its effects."""
    steps, effects = machine.reserve_api(clock()), []
    try:
        effect = next(steps)
        while True:
            effects.append(effect)
            result: Result = perform(store, effect, clock)
            effect = steps.send(result)
    except StopIteration as done:
        return float(done.value), effects


def test_a_compressed_policy_divides_the_api_windows_and_keeps_the_api_counts() -> None:
    assert (FAST.api_per_minute, FAST.api_per_hour) == (60, 1000)
    assert (FAST.minute_span, FAST.hour_span) == pytest.approx((6.0, 360.0))


def test_a_local_machine_on_a_compressed_policy_allows_60_api_calls_per_6_s() -> None:
    """60 calls in the first 3.75 s; the 61st waits until the first leaves the 6 s window
    (not the 60 s one), and at 6 s a call goes again. (Times in 1/16 s: exact in binary.)"""
    machine = TokenMachine(CREDENTIALS, FAST, rng())
    for i in range(60):
        assert machine.reserve_api_locally(i * 0.0625) == 0
    assert machine.reserve_api_locally(4.0) == 2.0
    assert local_wait(machine.reserve_api(5.5)) == 0.5
    assert machine.reserve_api_locally(6.0) == 0
    assert machine.reserve_api_locally(6.0) == 0.0625  # the second call's turn is next


def test_a_local_machine_on_a_compressed_policy_allows_1000_api_calls_per_360_s() -> None:
    """One call every 1/8 s keeps 48 per 6 s: 1,000 go in 125 s, the next waits until the
    first leaves the 360 s window (not the 3600 s one)."""
    machine = TokenMachine(CREDENTIALS, FAST, rng())
    for i in range(1000):
        assert machine.reserve_api_locally(i * 0.125) == 0
    assert machine.reserve_api_locally(125.0) == 235.0
    assert machine.reserve_api_locally(360.0) == 0


def test_a_compressed_machines_stats_count_api_calls_over_its_windows() -> None:
    machine = TokenMachine(CREDENTIALS, FAST, rng())
    for at in (0.0, 5.0):
        assert machine.reserve_api_locally(at) == 0
    stats = machine.stats(7.0)
    assert (stats.api_minute_spent, stats.api_hour_spent) == (1, 2)
    assert (stats.api_minute_remaining, stats.api_hour_remaining) == (59, 998)
    later = machine.stats(366.0)
    assert (later.api_minute_spent, later.api_hour_spent) == (0, 0)


@settings(max_examples=100, deadline=None)
@given(
    factor=st.floats(1.0, 60.0),
    bursts=st.lists(
        st.tuples(st.integers(1, 80), st.floats(0.0, 0.1), st.floats(0.0, 30.0)),
        min_size=1,
        max_size=30,
    ),
)
@example(factor=10.0, bursts=[(61, 0.0, 6.0), (1, 0.0, 0.0)])
def test_the_api_governor_refuses_exactly_what_breaks_a_compressed_window(
    factor: float, bursts: list[tuple[int, float, float]]
) -> None:
    """For any factor and any bursts of calls (``count`` calls ``gap`` s apart, then a
    ``pause``), a reservation is refused only when one more call would break 60 per
    ``60/factor`` s or 1,000 per ``3600/factor`` s, and then for exactly the time until it
    would not (the oracle scans every send)."""
    policy = Policy().compressed(factor)
    minute, hour = policy.minute_span, policy.hour_span
    machine = TokenMachine(CREDENTIALS, policy, rng())
    oracle, now = ScanningWindow(), 0.0
    for count, gap, pause in bursts:
        for _ in range(count):
            expected = oracle.next_allowed(now, 60, 1000, minute, hour) - now
            wait = machine.reserve_api_locally(now)
            assert wait == pytest.approx(expected, abs=1e-9)
            if wait == 0:
                oracle = oracle.record(now, hour)
            now += gap
        now += pause
    for t in oracle.sends:
        assert sum(1 for s in oracle.sends if t - minute < s <= t) <= 60
        assert sum(1 for s in oracle.sends if t - hour < s <= t) <= 1000


def test_a_fleet_reservation_passes_the_compressed_spans_to_the_store() -> None:
    """Every reservation in the store's budget (the first also learns the budget's epoch)
    names the compressed spans, which the store counts by."""
    clock = FakeClock(0.0)
    store = SimStore(clock)
    machine = TokenMachine(CREDENTIALS, FAST, random.Random(1), fleet=True, instance="p0")
    wait, effects = reservations(machine, store, clock)
    requests = [e.request for e in effects if isinstance(e, ReserveFleetBudget)]
    assert wait == 0 and requests
    for request in requests:
        assert (request.purpose, request.per_minute, request.per_hour) == (API_BUDGET, 60, 1000)
        assert (request.minute_span, request.hour_span) == (6.0, 360.0)
    clock.advance(6.0)
    assert store.spent(CREDENTIALS.cache_key, API_BUDGET, 6.0, 360.0) == (0, 1)


def test_a_compressed_fleet_sends_60_api_calls_per_6_s_between_its_processes() -> None:
    """Two processes on one store: 60 calls between them, then the fleet's budget makes the
    61st wait for the first to leave the 6 s window; at 6 s a call goes again."""
    clock = FakeClock(0.0)
    store = SimStore(clock)
    machines = [
        TokenMachine(CREDENTIALS, FAST, random.Random(i), fleet=True, instance=f"p{i}")
        for i in range(2)
    ]
    for i in range(60):
        assert reservations(machines[i % 2], store, clock)[0] == 0
        clock.advance(0.0625)
    first = store.budgets[API_BUDGET].sends.sends[0]
    assert reservations(machines[0], store, clock)[0] == first + 6.0 - clock()
    clock.advance(first + 6.0 - clock())
    assert reservations(machines[1], store, clock)[0] == 0


def test_a_compressed_process_working_alone_keeps_its_share_per_6_s() -> None:
    """The store down, a process keeps to 60 // 10 = 6 calls (its assumed share) per 6 s."""
    clock = FakeClock(0.0)
    store = SimStore(clock)
    store.down = True
    machine = TokenMachine(CREDENTIALS, FAST, random.Random(1), fleet=True, instance="p0")
    for _ in range(6):
        assert reservations(machine, store, clock)[0] == 0
        clock.advance(0.125)
    assert reservations(machine, store, clock)[0] == 6.0 - 0.75
    clock.advance(6.0 - 0.75)
    assert reservations(machine, store, clock)[0] == 0
    assert machine.api_alone  # the store was never reached: the share decided
