"""A call's deadline bounds the whole call: the core's decisions, on a fake time line.

Every exchange a call makes gets at most the time its deadline has left (an API call is sent
with ``min(timeout, time left)``; a wait for a token request ends at the deadline), no attempt
starts with less than ``MIN_ATTEMPT`` left, and ``deadline=0`` keeps its meaning: one attempt
with its whole normal timeout and no waiting. A token request is shared: no caller's deadline
cuts it short; an impatient caller stops waiting and the request goes on for the others.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eightyeightpay.api import (
    ApiResponse,
)
from eightyeightpay.errors import (
    ConnectError,
    ConnectionLost,
    DeadlineExceeded,
    RequestTimeout,
)
from eightyeightpay.http import HttpRequest, HttpResponse
from eightyeightpay.machine import (
    Exchange,
    Pause,
    Refresh,
    SendTokenRequest,
    TokenMachine,
    Unavailable,
    Wait,
)
from eightyeightpay.policy import MIN_ATTEMPT, Deadline, Policy, call_deadline
from eightyeightpay.tokens import Token
from tests.support import CREDENTIALS, FakeApiDriver, error_response, jwt, ok_response

POLICY = Policy()
BALANCE = "/api/balance"
CHARGES = "/api/transactions/charges"


# --------------------------------------------------------------------------- the value


def test_a_fail_fast_deadline_keeps_the_whole_timeout_and_never_waits() -> None:
    deadline = call_deadline(POLICY, 100.0, 0)
    assert deadline.fail_fast and deadline.at == 100.0
    assert deadline.may_start(105.0)  # its one attempt, however late
    assert deadline.budget(105.0, 30.0) == 30.0
    assert not deadline.fits(100.0)  # it waits for nothing
    assert deadline.wait_until(111.0) == 111.0  # it waits for its one attempt


def test_a_deadline_cuts_each_exchange_to_the_time_left() -> None:
    deadline = call_deadline(POLICY, 100.0, 10.0)
    assert not deadline.fail_fast and deadline.at == 110.0
    assert deadline.budget(100.0, 30.0) == 10.0
    assert deadline.budget(109.0, 0.5) == 0.5
    assert deadline.budget(111.0, 30.0) == 0.0
    assert deadline.may_start(110.0 - 2 * MIN_ATTEMPT)
    assert not deadline.may_start(110.0 - MIN_ATTEMPT / 2)
    assert deadline.fits(110.0 - 2 * MIN_ATTEMPT) and not deadline.fits(110.0)
    assert deadline.wait_until(111.0) == 110.0 and deadline.wait_until(105.0) == 105.0


def test_the_default_is_the_policy_deadline() -> None:
    assert call_deadline(Policy(deadline=3.0), 1.0, None) == Deadline(4.0)
    assert call_deadline(Policy(deadline=0.0), 1.0, None) == Deadline(1.0, fail_fast=True)


# --------------------------------------------------------------------------- token requests


def test_a_caller_with_too_little_left_starts_no_token_request() -> None:
    machine = TokenMachine(CREDENTIALS, POLICY, random.Random(1))
    decision = machine.decide_and_start(5.0, Deadline(5.0 + MIN_ATTEMPT / 2))
    assert isinstance(decision, Unavailable)
    assert isinstance(decision.error, DeadlineExceeded)
    assert not decision.error.may_have_been_sent and decision.error.retry_after == 0.0
    assert decision.retry_at == 5.0  # a request may be sent now, with a longer deadline
    assert machine.flight is None and machine.sent == 0


def test_deadline_zero_starts_its_one_request_with_the_whole_request_timeout() -> None:
    machine = TokenMachine(CREDENTIALS, POLICY, random.Random(1))
    deadline = call_deadline(POLICY, 5.0, 0)
    decision = machine.decide_and_start(5.2, deadline)  # a moment after the call began
    assert isinstance(decision, Refresh) and decision.in_caller
    assert decision.until == decision.flight.ends_by
    send = next(machine.refresh(decision.flight))
    assert isinstance(send, SendTokenRequest) and send.timeout == POLICY.request_timeout


def test_waiters_with_different_deadlines_share_one_request_that_none_of_them_cuts() -> None:
    machine = TokenMachine(CREDENTIALS, POLICY, random.Random(1))
    impatient = machine.decide_and_start(0.0, call_deadline(POLICY, 0.0, 0.5))
    assert isinstance(impatient, Refresh) and not impatient.in_caller
    flight = impatient.flight
    assert impatient.until == 0.5 < flight.ends_by
    # The request keeps its own timeout: the impatient caller only stops waiting.
    steps = machine.refresh(flight)
    send = next(steps)
    assert isinstance(send, SendTokenRequest) and send.timeout == POLICY.request_timeout
    gave_up = machine.gave_up(impatient)
    assert isinstance(gave_up, DeadlineExceeded) and gave_up.may_have_been_sent
    assert gave_up.retry_after == pytest.approx(flight.ends_by - 0.5)
    patient = machine.decide_and_start(0.3, call_deadline(POLICY, 0.3, 30.0))
    assert isinstance(patient, Wait) and patient.until == flight.ends_by
    assert isinstance(machine.gave_up(patient), RequestTimeout)
    assert not isinstance(machine.gave_up(patient), DeadlineExceeded)
    fast = machine.decide_and_start(0.4, call_deadline(POLICY, 0.4, 0))
    assert isinstance(fast, Wait) and fast.until == flight.ends_by
    # The answer comes after the impatient caller's deadline: the others get the token.
    with pytest.raises(StopIteration) as stop:
        steps.send(Exchange(ok_response(1), None, 2.0))
    assert stop.value.value.token is not None and machine.flight is None


def test_no_pause_ends_with_less_than_the_minimum_left() -> None:
    machine = TokenMachine(CREDENTIALS, POLICY, random.Random(1))
    first = machine.decide_and_start(0.0)
    assert isinstance(first, Refresh)
    steps = machine.refresh(first.flight)
    next(steps)
    with pytest.raises(StopIteration):
        steps.send(Exchange(error_response(500, "boom"), None, 0.1))
    retry_at = machine.blocked_until
    barely = machine.decide_and_start(0.2, Deadline(retry_at + MIN_ATTEMPT / 2))
    assert isinstance(barely, Unavailable) and barely.retry_at == retry_at
    assert isinstance(machine.decide_and_start(0.2, Deadline(retry_at + MIN_ATTEMPT)), Pause)


DEADLINES = st.one_of(st.just(0.0), st.floats(0.0, 40.0))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    deadlines=st.lists(DEADLINES, min_size=1, max_size=8),
    arrivals=st.lists(st.floats(0.0, 15.0), min_size=8, max_size=8),
    latency=st.floats(0.0, 15.0),
    failures=st.integers(0, 3),
    start=st.floats(0.0, 1000.0),
)
def test_no_caller_waits_past_its_deadline_and_none_cuts_the_shared_request(
    deadlines: list[float],
    arrivals: list[float],
    latency: float,
    failures: int,
    start: float,
) -> None:
    """Callers with any deadlines arrive while one token request is out.

    Each waits at most until its deadline (a fail-fast caller: until the request's end), no
    pause or request starts with less than the minimum left, and the request itself always
    keeps the policy's whole ``request_timeout``.
    """
    machine = TokenMachine(CREDENTIALS, POLICY, random.Random(failures))
    now = base = start
    for _ in range(failures):  # a history of failures: a backoff to pause for, or not
        decision = machine.decide_and_start(now)
        assert isinstance(decision, Refresh)
        history = machine.refresh(decision.flight)
        next(history)
        base = now + 0.1
        with pytest.raises(StopIteration):
            history.send(Exchange(error_response(503, "busy"), None, base))
        now = machine.blocked_until
    flight = None
    steps = None
    for deadline_s, arrival in zip(deadlines, sorted(arrivals), strict=False):
        at = base + arrival
        deadline = call_deadline(POLICY, at, deadline_s)
        decision = machine.decide_and_start(at, deadline)
        match decision:
            case Pause(resume):
                assert not deadline.fail_fast and resume + MIN_ATTEMPT <= deadline.at
            case Unavailable(error, retry_at):
                assert retry_at >= at
                if isinstance(error, DeadlineExceeded):
                    assert not deadline.fail_fast and deadline.at - at < MIN_ATTEMPT
            case Refresh() | Wait():
                if isinstance(decision, Refresh):
                    assert deadline.may_start(at)
                    flight, steps = decision.flight, machine.refresh(decision.flight)
                    send = next(steps)
                    assert isinstance(send, SendTokenRequest)
                    assert send.timeout == POLICY.request_timeout  # no caller cuts it
                assert decision.until <= decision.flight.ends_by
                if deadline.fail_fast:
                    assert decision.until == decision.flight.ends_by
                else:
                    assert decision.until <= deadline.at
                late = decision.until < decision.flight.ends_by
                assert isinstance(machine.gave_up(decision), DeadlineExceeded) == late
            case _:
                raise AssertionError(f"no token is cached: {decision}")
    if steps is not None:
        assert flight is not None
        with pytest.raises(StopIteration):
            steps.send(Exchange(ok_response(9), None, flight.started_at + latency))


# --------------------------------------------------------------------------- API calls


def _token(n: int) -> Token:
    return Token.issue(
        jwt(nonce=n), f"sess_{n}", sent_at=0.0, lifetime=60, merchant_id="M", policy=POLICY
    )


ANSWERS = st.sampled_from(["200", "401", "429", "503", "refused", "reset"])


class Timeline(FakeApiDriver):
    """Performs an API call's effects on a fake clock, each exchange within its budget."""

    def __init__(self, answers: list[str], latencies: list[float], *token_latencies: float) -> None:
        super().__init__(TokenMachine(CREDENTIALS, POLICY, random.Random(0)))
        self.answers, self.latencies, self.token_latencies = answers, latencies, token_latencies
        self.sends: list[tuple[float, float]] = []  # (when, timeout)
        self.outcomes: list[str] = []
        self.tokens = 0

    def token(self, until: Deadline) -> Token:
        # As the drivers' get_token(): the wait ends at the deadline.
        latency = self.token_latencies[min(self.tokens, len(self.token_latencies) - 1)]
        self.tokens += 1
        if until.fail_fast or self.now + latency <= until.at:
            self.now += latency
            return _token(self.tokens)
        self.now = until.at
        raise DeadlineExceeded("", retry_after=1, may_have_been_sent=True)

    def answer(self, request: HttpRequest, timeout: float) -> object:
        self.sends.append((self.now, timeout))
        n = len(self.sends)
        kind = self.answers[min(n, len(self.answers)) - 1]
        latency = self.latencies[(n - 1) % len(self.latencies)]
        if kind == "refused":
            self.now += min(latency, timeout)
            return ConnectError("api-sandbox.88pay.io", "refused")
        if latency > timeout:  # the server is slower than the exchange's budget
            self.now += timeout
            self.outcomes.append("timeout")
            return RequestTimeout("api-sandbox.88pay.io", timeout, may_have_been_sent=True)
        self.now += latency
        self.outcomes.append(kind)
        if kind == "reset":
            return ConnectionLost("api-sandbox.88pay.io", "reset")
        if kind == "429":
            return error_response(429, "Rate limit exceeded.", retry_after=1)
        if kind == "503":
            return error_response(503, "busy")
        return HttpResponse(int(kind), (), b'{"status":"Success","code":200,"data":{}}')

    def run_call(self, path: str, deadline: Deadline, timeout: float) -> ApiResponse | Exception:
        return self.charge(path, deadline, timeout=timeout)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    answers=st.lists(ANSWERS, min_size=1, max_size=8),
    latencies=st.lists(st.floats(0.0, 40.0), min_size=1, max_size=8),
    token_latency=st.floats(0.0, 12.0),
    deadline_s=DEADLINES,
    timeout=st.floats(0.1, 40.0),
    path=st.sampled_from([BALANCE, CHARGES]),
)
def test_no_api_exchange_is_given_more_than_the_time_left_except_deadline_zero(
    answers: list[str],
    latencies: list[float],
    token_latency: float,
    deadline_s: float,
    timeout: float,
    path: str,
) -> None:
    line = Timeline(answers, latencies, token_latency)
    deadline = call_deadline(POLICY, 0.0, deadline_s)
    outcome = line.run_call(path, deadline, timeout)
    if deadline.fail_fast:
        # One attempt (and the one 401 replay), each with the whole timeout, no waiting.
        assert all(budget == timeout for _, budget in line.sends)
        assert len(line.sends) <= 1 + (line.outcomes[:1] == ["401"])
        assert not line.slept
    else:
        for when, budget in line.sends:
            assert deadline.at - when >= MIN_ATTEMPT  # started with enough left
            assert budget <= deadline.at - when  # never more than the time left
            assert budget <= timeout
        for when, seconds in line.slept:
            assert when + seconds + MIN_ATTEMPT <= deadline.at + 1e-9
        assert line.now <= deadline.at + 1e-9  # the call ended by its deadline
    if path == CHARGES:  # a charge that may have been processed is never sent again
        maybe = [o in ("timeout", "reset", "503") for o in line.outcomes]
        assert True not in maybe[:-1]
    if isinstance(outcome, DeadlineExceeded) and outcome.failed_request == f"POST {path}":
        assert outcome.may_have_been_sent == any(
            o in ("timeout", "reset", "503") for o in line.outcomes
        )


def test_a_call_with_too_little_left_after_its_token_is_not_sent() -> None:
    line = Timeline(["200"], [0.1], 10.0 - MIN_ATTEMPT / 2)
    outcome = line.run_call(CHARGES, call_deadline(POLICY, 0.0, 10.0), 30.0)
    assert isinstance(outcome, DeadlineExceeded)
    assert outcome.failed_request == f"POST {CHARGES}" and not outcome.may_have_been_sent
    assert line.sends == []


def test_a_read_only_call_retried_after_a_reset_says_it_may_have_been_sent() -> None:
    # The reset comes at 0.1 s, the backoff takes 0.5-1 s, the second token all but the rest.
    line = Timeline(["reset", "200"], [0.1], 0.0, 8.9)
    outcome = line.run_call(BALANCE, Deadline(10.0), 30.0)
    assert line.outcomes == ["reset"] and len(line.sends) == 1
    assert isinstance(outcome, DeadlineExceeded) and outcome.failed_request == f"POST {BALANCE}"
    assert outcome.may_have_been_sent


def test_an_api_call_is_sent_with_the_time_left_and_deadline_zero_with_its_timeout() -> None:
    line = Timeline(["200"], [0.1], 2.0)
    assert isinstance(line.run_call(CHARGES, call_deadline(POLICY, 0.0, 10.0), 30.0), ApiResponse)
    assert line.sends == [(2.0, 8.0)]
    line = Timeline(["200"], [0.1], 2.0)
    assert isinstance(line.run_call(CHARGES, call_deadline(POLICY, 0.0, 0), 30.0), ApiResponse)
    assert line.sends == [(2.0, 30.0)]
