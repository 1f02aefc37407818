"""Degraded mode without a stampede, deterministic: processes that learnt the fleet's size
while the store was up keep to their share of 88Pay's limits when it goes down, and spread
their refreshes over the token's safe life instead of sending at the same instant."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eightyeightpay.credentials import Credentials
from eightyeightpay.errors import EightyEightPayError, RateLimited
from eightyeightpay.machine import Exchange, SendTokenRequest
from eightyeightpay.plugins.sandbox import (
    DEFAULT_API_KEY,
    DEFAULT_MERCHANT_ID,
    FakeClock,
    RateLimit,
    Sandbox,
    SandboxTransport,
)
from eightyeightpay.policy import Policy
from tests.fleet_sim import SimCaller, SimProcess, SimStore

CREDENTIALS = Credentials(DEFAULT_API_KEY, DEFAULT_MERCHANT_ID)


class Fleet:
    """``count`` processes over one simulated store and one emulator, on one fake clock."""

    def __init__(self, count: int, policy: Policy, seed: int, *, callers: bool = False) -> None:
        self.clock = FakeClock()
        self.policy = policy
        self.sandbox = Sandbox(
            token_lifetime=round(policy.expected_lifetime),
            token_limits=(
                RateLimit(policy.per_minute, policy.minute_span),
                RateLimit(policy.per_hour, policy.hour_span),
            ),
        )
        self.transport = SandboxTransport(self.sandbox, self.clock)
        self.store = SimStore(self.clock)
        self.processes = [
            SimProcess(f"p{i}", CREDENTIALS, policy, seed * 100 + i, self.clock)
            for i in range(count)
        ]
        self.sends: list[tuple[float, bool]] = []  # (time, sent alone while the store failed)
        self.failed: list[EightyEightPayError] = []
        # With callers, each process has one caller keeping the policy's deadline (as a
        # manager's get_token() does) instead of asking once per step and failing fast.
        self.callers = [SimCaller(p) for p in self.processes] if callers else []
        self.in_transit = 0.0  # seconds a token request takes to reach the emulator
        self.arrivals: dict[str, list[float]] = {p.machine.instance: [] for p in self.processes}

    def send(self, effect: SendTokenRequest) -> Exchange:
        sender = next(p for p in self.processes if p.effect is effect)
        self.clock.advance(self.in_transit)  # the emulator counts it when it arrives
        self.sends.append((self.clock(), sender.machine.degraded))
        self.arrivals[sender.machine.instance].append(self.clock())
        try:
            response = self.transport.send(effect.request, timeout=effect.timeout)
        except EightyEightPayError as error:
            return Exchange(None, error, self.clock())
        return Exchange(response, None, self.clock())

    def run(self, seconds: float, step: float = 0.05) -> None:
        """Every process asked every ``step`` seconds, its flight stepped to its end."""
        for _ in range(round(seconds / step)):
            self.clock.advance(step)
            for caller in self.callers:
                caller.tick()
            for process in self.processes if not self.callers else ():
                outcome = process.ask()
                if isinstance(outcome, EightyEightPayError):
                    self.failed.append(outcome)
            for _ in range(8):
                for process in self.processes:
                    process.step(self.store, self.send)
            for caller in self.callers:
                caller.tick()  # a flight that just settled: its callers take its outcome now

    def most_alone_in_any(self, span: float) -> int:
        alone = sorted(t for t, degraded in self.sends if degraded)
        return max((sum(1 for u in alone if t <= u < t + span) for t in alone), default=0)


def test_the_fleet_learns_its_size_while_the_store_is_up() -> None:
    fleet = Fleet(8, Policy().compressed(10), seed=1)
    fleet.run(8.0)
    assert [p.machine.members for p in fleet.processes] == [8] * 8
    assert len(fleet.sends) <= 3  # one token per refresh for the whole fleet


def test_eight_processes_down_for_two_lifetimes_draw_no_429_and_fail_no_caller() -> None:
    fleet = Fleet(8, Policy().compressed(10), seed=2)
    fleet.run(8.0)
    fleet.store.down = True
    fleet.run(12.0, step=0.01)  # two token lifetimes
    fleet.store.down = False
    fleet.run(8.0)
    assert fleet.sandbox.stats()["rate_limited"] == 0
    assert fleet.most_alone_in_any(6.0) <= 8  # 1 of 10 per 6 s each (10 // 8)
    alone = sorted(t for t, degraded in fleet.sends if degraded)
    assert len(alone) >= 8  # each process did get tokens of its own


@pytest.mark.parametrize("stalls", [True, False], ids=["stalling", "failing-fast"])
def test_processes_finding_the_store_down_refresh_at_times_of_their_own(stalls: bool) -> None:
    """Each process draws its own time within the fleet token's safe life instead of all
    sending at the instant they found the store down. A store that stalls is not waited
    for; one that fails fast (a killed Redis refuses connections at once) is read again
    while it may be failing over, but only until the process's own time: riding out the
    same grace, every process would send at its end, after the token had run out."""
    fleet = Fleet(8, Policy().compressed(10), seed=4)
    fleet.run(8.0)
    fleet.store.down, fleet.store.stalls = True, stalls
    fleet.run(6.0, step=0.01)
    first_round = sorted(t for t, degraded in fleet.sends if degraded)[:8]
    assert len(first_round) == 8
    assert len(set(first_round)) >= 5 and first_round[-1] - first_round[0] >= 0.05
    assert max(first_round.count(t) for t in first_round) <= 2  # no burst at one instant
    assert fleet.sandbox.stats()["rate_limited"] == 0
    assert all(isinstance(error, RateLimited) for error in fleet.failed)


def test_a_fleet_larger_than_the_budget_answers_rate_limited_before_sending() -> None:
    policy = Policy(per_minute=3, per_hour=100, lead=0.0, max_hourly_cost=60)
    fleet = Fleet(4, policy.compressed(10), seed=3)
    fleet.run(8.0)
    assert fleet.processes[0].machine.members == 4
    fleet.store.down = True
    fleet.run(12.0)
    assert not any(degraded for _, degraded in fleet.sends)  # a share of 3 // 4 is nothing
    assert fleet.sandbox.stats()["rate_limited"] == 0
    assert fleet.failed and all(
        isinstance(error, RateLimited) and error.local for error in fleet.failed
    )


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    count=st.integers(2, 12),
    seed=st.integers(0, 10_000),
    healthy=st.floats(6.5, 20.0),
    down=st.floats(1.0, 30.0),
)
def test_degraded_processes_never_exceed_the_limits_together(
    count: int, seed: int, healthy: float, down: float
) -> None:
    fleet = Fleet(count, Policy().compressed(10), seed)
    fleet.run(healthy, step=0.1)
    fleet.store.down = True
    fleet.run(down, step=0.1)
    alone = sorted(t for t, degraded in fleet.sends if degraded)
    for t in alone:
        assert sum(1 for u in alone if t <= u < t + fleet.policy.minute_span) <= 10
        assert sum(1 for u in alone if t <= u < t + fleet.policy.hour_span) <= 100
    assert fleet.sandbox.stats()["rate_limited"] == 0


def test_a_spent_share_holds_only_while_the_store_is_down() -> None:
    """A process that used up its hourly share while the store was down waits for the store,
    not for its share: once the store is back, the fleet's budget decides again within the
    backoff (at most 60 s), instead of the process refusing every call until its share
    frees (most of an hour on 88Pay's limits)."""
    fleet = Fleet(8, Policy().compressed(10), seed=5)
    fleet.run(8.0)
    del fleet.processes[2:]  # six stop; the two left still count a fleet of 8
    fleet.store.down = True
    fleet.run(80.0, step=0.1)  # 100 // 8 = 12 sends an hour each: all spent, and more asked
    assert any(isinstance(error, RateLimited) and error.local for error in fleet.failed)
    fleet.store.down = False
    fleet.run(70.0, step=0.1)
    assert not any(p.machine.degraded for p in fleet.processes)
    fleet.failed.clear()
    sent = len(fleet.sends)
    fleet.run(20.0, step=0.1)
    assert fleet.failed == []  # the fleet's budget (about 30 of 100 spent) serves them
    assert len(fleet.sends) - sent <= 6  # one token per refresh for the whole fleet again
    assert fleet.sandbox.stats()["rate_limited"] == 0


@pytest.mark.parametrize("deadline", [10.0, 10.5])
def test_held_back_for_its_share_a_process_sends_when_the_share_frees(deadline: float) -> None:
    """88Pay's real limits and tokens, 8 processes, the store down 2 minutes, each process
    with one caller keeping its deadline. A process's share is 1 token a minute, and a
    token is usable for 50 s: each process is without a usable token for 10 s of each
    minute (the margin), and its callers pause until its share frees. A refusal for the
    share held the next attempt back for the backoff, which by then had grown past the
    share's end (up to 16 s later): callers failed for seconds on end. Now the attempt
    comes when the share frees. With a deadline just over the 10 s gap no call fails; with
    the default 10 s, only a call that came at the very start of a gap does (its deadline
    ends when the share frees), at most one per token sent alone."""
    fleet = outage_with_callers(deadline)
    alone = [t for t, degraded in fleet.sends if degraded]
    assert len(alone) >= 16  # each process's first and second token of its own
    assert fleet.sandbox.stats()["rate_limited"] == 0
    failed = [error for caller in fleet.callers for _, error in caller.failed]
    assert all(isinstance(error, RateLimited) and error.local for error in failed)
    if deadline > 10.0:
        assert failed == []
    else:
        assert len(failed) <= len(alone)


def outage_with_callers(deadline: float) -> Fleet:
    """8 processes on 88Pay's real limits, one caller each: 75 s healthy, 2 minutes down."""
    fleet = Fleet(8, Policy(deadline=deadline), seed=6, callers=True)
    fleet.run(75.0)
    assert [p.machine.members for p in fleet.processes] == [8] * 8
    fleet.store.down = True
    fleet.run(120.0)
    return fleet


@pytest.mark.parametrize("deadline", [10.0, 10.5])
def test_a_refresh_held_back_for_the_share_warns_and_errs_only_when_calls_fail(
    deadline: float,
) -> None:
    """Held back for its share, a refresh has not failed, and a token running out meanwhile
    does not fail callers that can wait for the share: one WARNING per streak saying so, an
    ERROR only for a process one of whose calls did fail, one INFO when a refresh goes
    through. It logged "refresh failed" and, when the token ran out, "calls fail until one
    succeeds" while its callers were pausing."""
    fleet = outage_with_callers(deadline)
    fleet.store.down = False
    fleet.run(60.0)
    for process, caller in zip(fleet.processes, fleet.callers, strict=True):
        notices = process.machine.take_notices()
        levels = [notice.level for notice in notices]
        warnings = [n.message for n in notices if n.level == "warning"]
        errors = [n.message for n in notices if n.level == "error"]
        assert warnings and all("held back" in message for message in warnings)
        assert all("calls for" in message and "fail:" in message for message in errors)
        assert bool(errors) == bool(caller.failed)
        assert levels.count("info") == len(warnings) >= len(errors)
        assert levels[-1] == "info"  # the store is back: every streak ended
        for notice in notices:
            assert "ran out because" not in notice.message
            assert DEFAULT_API_KEY not in notice.message
            token = process.machine.token
            assert token is not None and token.access_token not in notice.message
    if deadline > 10.0:
        assert not any(caller.failed for caller in fleet.callers)


def test_the_fleet_is_not_undercounted_while_it_rejoins_a_store_that_lost_it() -> None:
    """A store that comes back empty (a Redis restarted without persistence) has lost the
    fleet's members, and they rejoin one by one, each at its next refresh: the first back
    counted 1, 2, 3... and, if the store failed again within that lifetime, kept to a
    share of 10, 5, 3... of the limits together: 429s. A process back from working alone
    now keeps its larger count for a lifetime."""
    fleet = Fleet(8, Policy().compressed(10), seed=7)
    fleet.run(8.0)
    fleet.store.down = True
    fleet.run(12.0, step=0.01)
    fleet.store.down = False
    fleet.store.restart()
    fleet.run(1.0, step=0.01)  # some of the fleet back through the store, not all
    assert 0 < len(fleet.store.members) < 8
    fleet.store.down = True
    sent = len(fleet.sends)
    fleet.run(12.0, step=0.01)
    assert [p.machine.members for p in fleet.processes] == [8] * 8
    alone = sorted(t for t, degraded in fleet.sends[sent:] if degraded)
    assert max(sum(1 for u in alone if t <= u < t + 6.0) for t in alone) <= 8
    assert fleet.sandbox.stats()["rate_limited"] == 0


def test_a_share_freeing_is_counted_from_the_answer_of_the_send_it_waited_for() -> None:
    """A process sends alone again the moment its share frees, a minute after its last
    send; 88Pay counts a request when it arrives. Counted from the moment it was sent, a
    first request that took 0.5 s to arrive and a next one that took none reached 88Pay
    59.5 s apart: two within a minute from a process whose share is one (the run on real
    servers drew a 429 so). Counted from its answer, they are a minute apart at least."""
    fleet = Fleet(8, Policy(deadline=10.5), seed=6, callers=True)
    fleet.run(75.0)
    fleet.store.down = True
    fleet.in_transit = 0.5
    fleet.run(40.0)  # every process's first token of its own, each slow to arrive
    assert all(len(times) >= 1 for times in fleet.arrivals.values())
    fleet.in_transit = 0.0
    fleet.run(80.0)
    for times in fleet.arrivals.values():
        alone = times[-2:]  # this process's first and second tokens of its own
        assert len(alone) == 2 and alone[1] - alone[0] >= fleet.policy.minute_span
