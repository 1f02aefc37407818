"""The core's retry decisions within a caller's deadline, driven on a fake time line.

A caller here is the drivers' loop in miniature: decide, send the flight's request, and on
a failure ask :meth:`TokenMachine.may_retry`; a :class:`Pause` moves the time line. Every
answer comes from a script, so each test and each hypothesis example is deterministic.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eightyeightpay.errors import (
    AccessDenied,
    ConnectionLost,
    EightyEightPayError,
    InvalidCredentials,
    MalformedResponse,
    ServerError,
)
from eightyeightpay.http import HttpResponse
from eightyeightpay.machine import (
    Exchange,
    Flight,
    Notice,
    Pause,
    Refresh,
    SendTokenRequest,
    Serve,
    ServeAndRefresh,
    Settled,
    TokenMachine,
    Unavailable,
)
from eightyeightpay.policy import Policy, backoff_delay, call_deadline
from tests.support import API_KEY, CREDENTIALS, error_response, jwt, ok_response, token_body

LATENCY = 0.05
"""Seconds each scripted exchange takes."""

Answer = HttpResponse | EightyEightPayError


def answer_of(kind: str, n: int) -> Answer:
    match kind:
        case "ok":
            return ok_response(n)
        case "500":
            return error_response(500, "Internal Server Error")
        case "502-html":
            return HttpResponse(502, (("Content-Type", "text/html"),), b"<html>Bad Gateway</html>")
        case "429":
            return HttpResponse(
                429,
                (("Retry-After", "2"),),
                b'{"status":"Error","code":429,"message":"Rate limit exceeded."}',
            )
        case "reset":
            return ConnectionLost("api-sandbox.88pay.io", "reset")
        case "401":
            return error_response(401, "Invalid API key or merchant ID")
        case "403":
            return error_response(403, "Access denied")
        case "unusable":
            body = token_body(jwt(nonce=n, life=60), 0.0001, f"sess_{n}")
            return HttpResponse(200, (("Content-Type", "application/json"),), body)
    raise AssertionError(kind)


class Caller:
    """One ``get_token()`` call's loop over the machine, on a time line it owns."""

    def __init__(self, machine: TokenMachine, script: Callable[[int], Answer]) -> None:
        self.machine = machine
        self.script = script
        self.now = 0.0
        self.sends: list[float] = []

    def get_token(self, deadline: float) -> object:
        until = call_deadline(self.machine.policy, self.now, deadline)
        while True:
            decision = self.machine.decide_and_start(self.now, until)
            match decision:
                case Serve(token):
                    return token
                case ServeAndRefresh(token, flight):
                    self.run(flight)  # the background refresh, run at once
                    return token
                case Pause(resume):
                    assert self.now < resume <= until.at
                    self.now = resume
                    continue
                case Unavailable(error, _):
                    return error
                case Refresh(flight):
                    settled = self.run(flight)
                case _:
                    raise AssertionError(f"a single caller never waits: {decision}")
            if settled.error is not None:
                if not self.machine.may_retry(settled.error, self.now, until):
                    return settled.error
                continue
            assert settled.token is not None
            return settled.token

    def run(self, flight: Flight) -> Settled:
        steps = self.machine.refresh(flight)
        effect = next(steps)
        assert isinstance(effect, SendTokenRequest)
        self.sends.append(self.now)
        answer = self.script(len(self.sends))
        self.now += LATENCY
        result = (
            Exchange(answer, None, self.now)
            if isinstance(answer, HttpResponse)
            else Exchange(None, answer, self.now)
        )
        with pytest.raises(StopIteration) as stop:
            steps.send(result)
        settled: Settled = stop.value.value
        return settled


def caller(script: list[str], policy: Policy | None = None) -> Caller:
    machine = TokenMachine(CREDENTIALS, policy or Policy(), random.Random(3))
    return Caller(machine, lambda n: answer_of(script[min(n, len(script)) - 1], n))


@pytest.mark.parametrize(
    ("script", "sends"),
    [
        (["500", "500", "ok"], 3),
        (["reset", "ok"], 2),
        (["502-html", "ok"], 2),
        (["429", "ok"], 2),
    ],
)
def test_transient_failures_are_retried_within_the_default_deadline(
    script: list[str], sends: int
) -> None:
    call = caller(script)
    result = call.get_token(Policy().deadline)
    assert not isinstance(result, EightyEightPayError), result
    assert len(call.sends) == sends
    assert call.now <= Policy().deadline + LATENCY


def test_a_429_is_retried_no_earlier_than_its_retry_after() -> None:
    call = caller(["429", "ok"])
    call.get_token(10.0)
    assert call.sends[1] - call.sends[0] >= 2.0


@pytest.mark.parametrize(("kind", "error"), [("401", InvalidCredentials), ("403", AccessDenied)])
def test_a_definite_failure_fails_at_once_and_is_not_waited_out(
    kind: str, error: type[EightyEightPayError]
) -> None:
    call = caller([kind, "ok"])
    assert isinstance(call.get_token(10.0), error)
    assert len(call.sends) == 1
    assert isinstance(call.get_token(60.0), error)  # during the backoff: no wait, no send
    assert len(call.sends) == 1


def test_fail_fast_makes_one_attempt() -> None:
    call = caller(["500", "ok"])
    result = call.get_token(0.0)
    assert isinstance(result, ServerError)
    assert len(call.sends) == 1
    assert result.retry_after > 0  # says when a token can next be had


def test_a_token_unusable_on_arrival_is_malformed_and_counted_as_a_failure() -> None:
    call = caller(["unusable"])
    result = call.get_token(Policy().deadline)
    assert isinstance(result, MalformedResponse)
    assert "unusable" in result.message
    assert len(call.sends) <= schedule_bound(Policy(), Policy().deadline)
    assert len(call.sends) < 10


def schedule_bound(policy: Policy, deadline: float) -> int:
    """Most attempts a call can make: each backoff is at least half its ceiling."""
    attempts, elapsed = 1, 0.0
    while True:
        ceiling = min(policy.backoff_cap, policy.backoff_initial * 2.0 ** (attempts - 1))
        elapsed += ceiling / 2 + LATENCY
        if elapsed > deadline:
            return attempts
        attempts += 1


def test_when_the_deadline_cannot_be_met_the_error_says_when_a_token_can_be_had() -> None:
    call = caller(["500"])
    result = call.get_token(3.0)
    assert isinstance(result, ServerError)
    assert 0 < result.retry_after <= Policy().backoff_cap
    again = call.machine.decide_and_start(call.now)  # failing fast
    assert isinstance(again, Unavailable)
    assert again.retry_at == pytest.approx(call.now + result.retry_after)


KINDS = st.sampled_from(["ok", "500", "502-html", "429", "reset", "401", "403", "unusable"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    script=st.lists(KINDS, min_size=1, max_size=12),
    deadlines=st.lists(st.sampled_from([0.0, 1.0, 10.0, 30.0]), min_size=1, max_size=6),
    gaps=st.lists(st.floats(0, 30), min_size=6, max_size=6),
)
def test_calls_keep_the_schedule_the_limits_and_the_definite_rule(
    script: list[str], deadlines: list[float], gaps: list[float]
) -> None:
    policy = Policy()
    call = caller(script, policy)
    for deadline, gap in zip(deadlines, gaps, strict=False):
        start, before = call.now, len(call.sends)
        result = call.get_token(deadline)
        made = call.sends[before:]
        # No attempt starts after the deadline; the call makes at most the schedule's attempts.
        assert all(t <= start + deadline for t in made)
        assert len(made) <= schedule_bound(policy, deadline)
        # A definite failure is never sent again within the call.
        if isinstance(result, InvalidCredentials | AccessDenied) and made:
            last = script[min(len(call.sends), len(script)) - 1]
            assert last in ("401", "403")
        # A token handed out is usable.
        if not isinstance(result, EightyEightPayError):
            assert result.usable_until > call.now  # type: ignore[attr-defined]
        call.now += gap
    # 88Pay's limits hold over the whole time line.
    for i, t in enumerate(call.sends):
        assert sum(1 for s in call.sends[: i + 1] if s > t - 60) <= policy.per_minute
    assert math.isfinite(call.now)


def test_backoff_grows_between_retries_of_one_call() -> None:
    call = caller(["500"] * 10)
    call.get_token(30.0)
    gaps = [b - a - LATENCY for a, b in zip(call.sends, call.sends[1:], strict=False)]
    policy = Policy()
    for attempt, gap in enumerate(gaps, 1):
        ceiling = min(policy.backoff_cap, policy.backoff_initial * 2.0 ** (attempt - 1))
        assert ceiling / 2 - 1e-9 <= gap <= ceiling + 1e-9
    assert backoff_delay(1, random.Random(0), policy) <= policy.backoff_initial


def test_a_failing_background_refresh_warns_once_per_streak_errs_when_the_token_runs_out() -> None:
    machine = TokenMachine(CREDENTIALS, Policy(), random.Random(3))
    call = Caller(machine, lambda n: answer_of("ok" if n == 1 else "500", n))
    token = call.get_token(10.0)
    assert not machine.take_notices()
    notices: list[Notice] = []
    now = token.fresh_until  # type: ignore[attr-defined]
    while now < token.usable_until + 30:  # type: ignore[attr-defined]
        decision = machine.decide_and_start(now)  # failing fast
        if isinstance(decision, ServeAndRefresh | Refresh):
            steps = machine.refresh(decision.flight)
            next(steps)
            with pytest.raises(StopIteration):
                steps.send(Exchange(error_response(500, "boom"), None, now + LATENCY))
        notices += machine.take_notices()
        now += 0.5
    levels = [n.level for n in notices]
    assert levels == ["warning", "error"], notices
    assert "s left" in notices[0].message and CREDENTIALS.merchant_id in notices[0].message
    left = float(notices[0].message.split("has ")[1].split(" s left")[0])
    assert 0 < left <= token.usable_until - token.fresh_until  # type: ignore[attr-defined]
    decision = machine.decide_and_start(now + 100)  # failing fast
    assert isinstance(decision, Refresh)
    steps = machine.refresh(decision.flight)
    next(steps)
    with pytest.raises(StopIteration):
        steps.send(Exchange(ok_response(9), None, now + 100))
    recovered = machine.take_notices()
    assert [n.level for n in recovered] == ["info"]
    for notice in (*notices, *recovered):
        assert token.access_token not in notice.message  # type: ignore[attr-defined]
        assert API_KEY not in notice.message
