"""Hypothesis invariants over the core: never an expired token, never two requests in flight,
never a broken rate window, backoff within its bounds."""

from __future__ import annotations

import heapq
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from eightyeightpay.errors import (
    ConnectError,
    ConnectionLost,
    EightyEightPayError,
    RateLimited,
    RetryableError,
)
from eightyeightpay.governor import RateWindow
from eightyeightpay.http import HttpResponse
from eightyeightpay.machine import (
    Exchange,
    Flight,
    Refresh,
    SendTokenRequest,
    Serve,
    ServeAndRefresh,
    TokenMachine,
    Unavailable,
    Wait,
)
from eightyeightpay.policy import Policy, backoff_delay
from tests.support import CREDENTIALS, ScanningWindow, error_response, ok_response

OUTCOMES = st.sampled_from(
    ["ok", "short", "500", "429", "429-bare", "reset", "refused", "401", "garbage"]
)


class TokenMachineRules(RuleBasedStateMachine):
    """Random calls, time jumps and request outcomes against one machine."""

    @initialize(seed=st.integers(0, 2**32 - 1))
    def start(self, seed: int) -> None:
        self.policy = Policy()
        self.machine = TokenMachine(CREDENTIALS, self.policy, random.Random(seed))
        self.now = 1000.0
        self.open: Flight | None = None
        self.steps: object = None
        self.sends: list[float] = []
        self.nonce = 0
        self.attempts = self.answered = self.received_429 = self.waited = self.rejected = 0

    @rule(seconds=st.floats(0, 400, allow_nan=False))
    def time_passes(self, seconds: float) -> None:
        self.now += seconds

    @rule()
    def caller_asks(self) -> None:
        decision = self.machine.decide_and_start(self.now)
        if isinstance(decision, Serve | ServeAndRefresh):
            token = decision.token
            assert self.now < token.usable_until <= token.expires_at
            margin, _ = self.policy.windows_for(token.expires_at - token.sent_at)
            assert token.expires_at - self.now > margin - 1e-9
        self.waited += isinstance(decision, Refresh | Wait)
        if isinstance(decision, Refresh | ServeAndRefresh):
            self.attempts += 1
            assert self.open is None, "a second request while one is in flight"
            self.open = decision.flight
            self.sends.append(self.now)
            self.steps = self.machine.refresh(decision.flight)
            effect = next(self.steps)
            assert isinstance(effect, SendTokenRequest)
        if isinstance(decision, Wait):
            assert self.open is not None and decision.flight == self.open
        if isinstance(decision, Unavailable):
            assert decision.retry_at > self.now
            assert isinstance(decision.error, EightyEightPayError)

    @precondition(lambda self: self.open is not None)
    @rule(outcome=OUTCOMES, latency=st.floats(0, 12, allow_nan=False))
    def request_ends(self, outcome: str, latency: float) -> None:
        self.now += latency
        self.nonce += 1
        response: HttpResponse | None = None
        error: EightyEightPayError | None = None
        if outcome == "ok":
            response = ok_response(self.nonce)
        elif outcome == "short":
            response = ok_response(self.nonce, life=7)
        elif outcome == "500":
            response = error_response(500, "Internal error")
        elif outcome == "429":
            response = error_response(429, "Rate limit exceeded.", retry_after=30)
        elif outcome == "429-bare":
            response = error_response(429, "Rate limit exceeded.")
        elif outcome == "401":
            response = error_response(401, "Invalid API key or merchant ID")
        elif outcome == "garbage":
            response = ok_response(self.nonce).__class__(200, (), b"<html>")
        elif outcome == "refused":
            error = ConnectError("host", "refused")
            assert self.open is not None
            self.sends.remove(self.open.started_at)  # never sent: 88Pay did not count it
        else:
            error = ConnectionLost("host", "reset")
        if response is not None:
            # 88Pay counted it by the time its answer came back: the windows count it then.
            assert self.open is not None
            self.sends[self.sends.index(self.open.started_at)] = self.now
        failures_before = self.machine.failures
        try:
            self.steps.send(Exchange(response, error, self.now))  # type: ignore[attr-defined]
            raise AssertionError("the protocol should end after one exchange")
        except StopIteration as stop:
            settled = stop.value
        self.open = None
        self.answered += 1
        self.received_429 += outcome in ("429", "429-bare")
        if settled.error is not None:
            attempt = failures_before + 1
            delay = self.machine.blocked_until - self.now
            ceiling = min(self.policy.backoff_cap, self.policy.backoff_initial * 2 ** (attempt - 1))
            server = 30.0 if outcome == "429" else 0.0
            assert ceiling / 2 - 1e-9 <= delay <= max(ceiling, server) + 1e-9
            if isinstance(settled.error, RateLimited | RetryableError):
                assert settled.error.retry_after == pytest.approx(delay)
        else:
            assert settled.token is not None

    @rule()
    def api_rejects_token(self) -> None:
        if self.machine.token is not None:
            assert self.machine.invalidate(self.machine.token)
            self.rejected += 1
            assert self.machine.token is None

    @invariant()
    def one_flight_at_most(self) -> None:
        if not hasattr(self, "machine"):
            return
        assert (self.machine.flight is None) == (self.open is None)

    @invariant()
    def stats_tell_what_happened(self) -> None:
        if not hasattr(self, "machine"):
            return
        stats = self.machine.stats(self.now)
        assert stats.token_requests == self.attempts
        assert sum(count for _, count in stats.outcomes) == self.answered
        assert stats.rate_limited == stats.outcome("rate_limited") == self.received_429
        assert (stats.waited, stats.rejected_tokens) == (self.waited, self.rejected)
        assert stats.refreshing == (self.open is not None)
        assert stats.failures_in_row == self.machine.failures
        assert stats.minute_spent == len([t for t in self.sends if t > self.now - 60])
        assert stats.hour_spent == len([t for t in self.sends if t > self.now - 3600])
        token = self.machine.token
        if token is None:
            assert stats.token_remaining is None
        else:
            assert stats.token_remaining == max(0.0, token.usable_until - self.now)

    @invariant()
    def rate_windows_hold(self) -> None:
        if not hasattr(self, "machine"):
            return
        last_minute = [t for t in self.sends if t > self.now - 60]
        last_hour = [t for t in self.sends if t > self.now - 3600]
        assert len(last_minute) <= self.policy.per_minute
        assert len(last_hour) <= self.policy.per_hour
        for i, t in enumerate(self.sends):
            window = [u for u in self.sends[: i + 1] if u > t - 60]
            assert len(window) <= self.policy.per_minute


TestTokenMachine = TokenMachineRules.TestCase
TestTokenMachine.settings = settings(max_examples=150, stateful_step_count=60, deadline=None)


@given(
    attempt=st.integers(1, 200),
    u=st.floats(0, 1, exclude_max=True),
    retry_after=st.none() | st.floats(0, 10_000, allow_nan=False),
)
def test_backoff_stays_within_bounds(attempt: int, u: float, retry_after: float | None) -> None:
    policy = Policy()

    class Fixed:
        def random(self) -> float:
            return u

    delay = backoff_delay(attempt, Fixed(), policy, retry_after=retry_after)
    ceiling = min(policy.backoff_cap, policy.backoff_initial * 2 ** min(attempt - 1, 62))
    assert ceiling / 2 <= delay or (retry_after is not None and delay == retry_after)
    assert delay <= max(ceiling, retry_after or 0)
    if retry_after is not None:
        assert delay >= retry_after


_TIMES = st.floats(0, 8_000, allow_nan=False)


@given(
    st.lists(_TIMES, max_size=120),
    _TIMES,
    st.integers(1, 12),
    st.integers(1, 40),
    st.sampled_from([(60.0, 3600.0), (6.0, 360.0), (0.5, 30.0)]),
)
def test_governor_window_answers_as_a_full_scan_does(
    times: list[float], now: float, per_minute: int, per_hour: int, spans: tuple[float, float]
) -> None:
    """The window's bisections answer exactly what scanning every send answers."""
    minute_span, hour_span = spans
    window = RateWindow()
    for t in times:  # in any order: a send reported late takes its place in time
        window = window.record(t, hour_span)
    sends = list(window.sends)
    assert sends == sorted(sends)
    scan = ScanningWindow(window.sends)
    expected = scan.next_allowed(now, per_minute, per_hour, minute_span, hour_span)
    allowed = window.next_allowed(now, per_minute, per_hour, minute_span, hour_span)
    assert allowed == expected or (allowed > expected and allowed - expected <= 1e-9 * expected)
    assert window.count(now, minute_span) == scan.count(now, minute_span)
    assert window.count(now, hour_span) == scan.count(now, hour_span)
    recorded = window.record(now, hour_span).sends
    assert list(recorded) == sorted(scan.record(now, hour_span).sends)
    if sends:
        gone = sends[len(sends) // 2]
        left = list(sends)
        left.remove(gone)
        assert list(window.forget(gone).sends) == left
    assert window.forget(-1.0) == window
    for at in {0, len(sends) // 2, len(sends) - 1} if sends else ():
        # a send counted later (or earlier): the others stay, the order holds
        moved = window.move(sends[at], now, hour_span).sends
        left = sorted([*sends[:at], *sends[at + 1 :], now])
        assert list(moved) == [t for t in left if t > now - hour_span]
    assert window.move(-1.0, now) == window


@given(
    st.lists(
        st.tuples(st.floats(0, 900, allow_nan=False), st.floats(0, 59.5, allow_nan=False)),
        max_size=80,
    ),
    st.booleans(),
)
def test_api_sends_that_reach_88pay_late_never_break_its_windows(
    calls: list[tuple[float, float]], at_the_end: bool
) -> None:
    """API calls wished for at any times, each taking under a minute from its reservation
    to its answer (a wait for a connection, a slow server): wherever in that time 88Pay
    counts each one (here: at its reservation, or at its answer), no rolling minute or hour
    of 88Pay's holds more than the limits. Counting a send at its reservation only, a send
    that waited left the window before it left 88Pay's."""
    machine = TokenMachine(CREDENTIALS, Policy(api_per_minute=5, api_per_hour=20), random.Random(1))
    events = [(wish, 0, i) for i, (wish, _) in enumerate(calls)]  # (time, 0 reserve / 1 end, i)
    heapq.heapify(events)
    reserved: dict[int, float] = {}
    arrivals: list[float] = []
    while events:
        now, kind, i = heapq.heappop(events)
        if kind == 1:
            machine.api_send_ended(reserved[i], now)
            continue
        wait = machine.reserve_api_locally(now)
        if wait > 0:
            heapq.heappush(events, (now + wait, 0, i))
            continue
        reserved[i] = now
        end = now + calls[i][1]
        arrivals.append(end if at_the_end else now)
        heapq.heappush(events, (end, 1, i))
    for a in arrivals:
        assert sum(1 for b in arrivals if a - 60 < b <= a) <= 5
        assert sum(1 for b in arrivals if a - 3600 < b <= a) <= 20
    assert machine.api_window.count(900 + 3600, 3600) <= 20


@given(st.lists(st.floats(0, 20_000, allow_nan=False), max_size=300))
def test_governor_never_allows_a_send_that_breaks_a_window(wishes: list[float]) -> None:
    """Whatever times senders ask for, sending at next_allowed keeps both rolling windows."""
    window = RateWindow()
    sent: list[float] = []
    now = 0.0
    for wish in sorted(wishes):
        now = max(now, wish)
        at = window.next_allowed(now, 10, 100)
        assert at >= now
        now = at
        window = window.record(now)
        sent.append(now)
        assert sum(1 for t in sent if t > now - 60) <= 10
        assert sum(1 for t in sent if t > now - 3600) <= 100
