"""The API call protocol's decisions: typed errors, the API governor, safe retries only.

The protocol is driven here by hand on a fake time line; every answer is scripted.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eightyeightpay import Policy
from eightyeightpay.api import (
    NeedToken,
    api_call,
)
from eightyeightpay.errors import (
    ApiError,
    ApiRateLimited,
    ApiServerError,
    BadRequest,
    ConnectError,
    ConnectionLost,
    DeadlineExceeded,
    EightyEightPayError,
    MalformedResponse,
    NotFound,
    PermissionDenied,
    Unauthorized,
    Unprocessable,
)
from eightyeightpay.http import HttpRequest, HttpResponse
from eightyeightpay.machine import TokenMachine
from eightyeightpay.policy import MIN_ATTEMPT, Deadline, call_deadline
from eightyeightpay.tokens import Token
from tests.support import CREDENTIALS, FakeApiDriver, jwt

CHARGES = "/api/transactions/charges"
BALANCE = "/api/balance?id=MCH-COL-TEST-12345"
LATENCY = 0.05
POLICY = Policy()


def envelope(status: int, message: str, **extra: object) -> HttpResponse:
    body: dict[str, object] = {
        "status": "Error" if status >= 400 else "Success",
        "code": status,
        "message": message,
    }
    body.update(extra)
    return HttpResponse(status, (("Content-Type", "application/json"),), json.dumps(body).encode())


def token(n: int = 1) -> Token:
    return Token.issue(
        jwt(nonce=n), f"sess_{n}", sent_at=0.0, lifetime=60, merchant_id="M", policy=POLICY
    )


Answer = HttpResponse | EightyEightPayError


class Driver(FakeApiDriver):
    """Performs the protocol's effects against a script, on a fake time line."""

    def __init__(self, script: Callable[[int], Answer], machine: TokenMachine | None = None):
        super().__init__(machine or TokenMachine(CREDENTIALS, POLICY, random.Random(1)))
        self.script = script
        self.sends: list[tuple[float, str]] = []

    def token(self, until: Deadline) -> Token:
        return token()

    def answer(self, request: HttpRequest, timeout: float) -> object:
        self.sends.append((self.now, request.path))
        self.now += LATENCY
        return self.script(len(self.sends))

    def call(self, path: str, deadline: float = POLICY.deadline) -> object:
        return self.charge(path, call_deadline(POLICY, self.now, deadline))


def scripted(*answers: Answer) -> Callable[[int], Answer]:
    return lambda n: answers[min(n, len(answers)) - 1]


OK = envelope(200, "OK", data={"id": "ch_1"})
SERVER_503 = envelope(503, "Service Unavailable")


@pytest.mark.parametrize(
    ("status", "kind", "processed"),
    [
        (400, BadRequest, False),
        (401, Unauthorized, False),
        (403, PermissionDenied, False),
        (404, NotFound, False),
        (422, Unprocessable, False),
        (409, ApiError, False),
        (429, ApiRateLimited, False),
        (500, ApiServerError, True),
        (502, ApiServerError, True),
        (503, ApiServerError, True),
        (999, ApiError, True),  # outside HTTP's classes: nothing says it was not done
    ],
)
def test_each_envelope_status_maps_to_its_typed_error(
    status: int, kind: type[ApiError], processed: bool
) -> None:
    driver = Driver(scripted(envelope(status, "the server's words", retry_after=60)))
    error = driver.call(CHARGES)
    assert type(error) is kind
    assert isinstance(error, ApiError)
    assert error.status == status and error.code == status
    assert error.server_message == "the server's words"
    assert error.may_have_been_processed is processed
    assert error.failed_request == f"POST {CHARGES}"
    assert f"POST {CHARGES}" in str(error) and str(status) in str(error)
    assert error.response is not None
    assert not isinstance(error, ApiRateLimited) or error.retry_after == 60


def test_a_charge_answered_503_is_never_sent_twice_and_says_so() -> None:
    driver = Driver(scripted(SERVER_503, OK))
    error = driver.call(CHARGES)
    assert isinstance(error, ApiServerError)
    assert error.may_have_been_processed
    assert "not sent again" in str(error) and "look it up" in str(error)
    assert len(driver.sends) == 1


def test_a_charge_whose_connection_broke_is_never_sent_twice() -> None:
    driver = Driver(scripted(ConnectionLost("api-sandbox.88pay.io", "reset"), OK))
    error = driver.call(CHARGES)
    assert isinstance(error, ConnectionLost) and error.failed_request == f"POST {CHARGES}"
    assert len(driver.sends) == 1


GARBAGE_200 = HttpResponse(200, (("Content-Type", "text/html"),), b"oops")


def test_a_2xx_that_is_not_json_is_malformed_may_have_been_processed_and_not_resent() -> None:
    driver = Driver(scripted(GARBAGE_200, OK))
    error = driver.call(CHARGES)
    assert isinstance(error, MalformedResponse) and error.status == 200
    assert error.may_have_been_processed and error.failed_request == f"POST {CHARGES}"
    assert "look it up" in str(error) and "oops" not in str(error)
    assert len(driver.sends) == 1
    balance = Driver(scripted(GARBAGE_200, OK))  # read-only: sent again after the backoff
    assert getattr(balance.call(BALANCE), "status", None) == 200
    assert len(balance.sends) == 2


def test_a_balance_answered_503_once_is_retried_and_returns_200() -> None:
    driver = Driver(scripted(SERVER_503, OK))
    response = driver.call(BALANCE)
    assert not isinstance(response, EightyEightPayError), response
    assert getattr(response, "status", None) == 200
    assert len(driver.sends) == 2
    assert driver.sends[1][0] - driver.sends[0][0] >= POLICY.backoff_initial / 2


def test_a_429_is_retried_after_its_retry_after_when_it_fits() -> None:
    driver = Driver(scripted(envelope(429, "Rate limit exceeded.", retry_after=2), OK))
    response = driver.call(CHARGES)
    assert getattr(response, "status", None) == 200
    assert driver.sends[1][0] - driver.sends[0][0] >= 2.0


def test_a_429_is_remembered_other_calls_are_answered_from_the_cool_down() -> None:
    driver = Driver(scripted(envelope(429, "Rate limit exceeded.", retry_after=30), OK))
    assert isinstance(driver.call(CHARGES), ApiRateLimited)
    error = driver.call(BALANCE, deadline=0)
    assert isinstance(error, ApiRateLimited) and error.local and error.status is None
    assert 0 < error.retry_after <= 30
    assert len(driver.sends) == 1


@pytest.mark.parametrize("said", [{}, {"retry_after": 0}])
def test_a_429_without_a_usable_wait_says_the_cool_down_it_keeps(said: dict[str, float]) -> None:
    driver = Driver(scripted(envelope(429, "Rate limit exceeded.", **said), OK))
    error = driver.call(CHARGES, deadline=0)
    assert isinstance(error, ApiRateLimited) and not error.local
    assert error.retry_after == POLICY.backoff_initial  # the cool-down kept after it
    assert f"Retry after {POLICY.backoff_initial:.1f} s." in str(error)
    refused = driver.call(BALANCE, deadline=0)  # at once: refused for the rest of it
    assert isinstance(refused, ApiRateLimited) and refused.local
    assert refused.retry_after <= error.retry_after
    assert len(driver.sends) == 1


def test_an_api_429s_retry_after_date_is_read_on_the_wall_clock() -> None:
    from email.utils import formatdate

    driver = Driver(scripted(OK))
    date = formatdate(driver.wall_at_zero + 30, usegmt=True)
    headers = (("Content-Type", "application/json"), ("Retry-After", date))
    body = json.dumps({"status": "Error", "code": 429, "message": "Rate limit exceeded."})
    driver.script = scripted(HttpResponse(429, headers, body.encode()), OK)
    error = driver.call(CHARGES, deadline=0)
    assert isinstance(error, ApiRateLimited) and not error.local
    assert 29 <= error.retry_after <= 30  # the date, 30 s ahead, less the exchange's latency
    assert "Retry after 29.9 s." in str(error) or "Retry after 30.0 s." in str(error)


def test_a_call_that_never_left_is_sent_again() -> None:
    driver = Driver(scripted(ConnectError("api-sandbox.88pay.io", "refused"), OK))
    assert getattr(driver.call(CHARGES), "status", None) == 200
    assert len(driver.sends) == 2


def test_a_401_invalidates_the_token_and_replays_once() -> None:
    driver = Driver(scripted(envelope(401, "Unauthorized"), OK))
    assert getattr(driver.call(CHARGES), "status", None) == 200
    assert driver.invalidated == 1 and len(driver.sends) == 2
    twice = Driver(scripted(envelope(401, "Unauthorized")))
    assert isinstance(twice.call(CHARGES), Unauthorized)
    assert len(twice.sends) == 2


def test_a_burst_of_100_calls_sends_60_and_answers_the_rest_locally() -> None:
    driver = Driver(scripted(OK))
    outcomes = []
    for _ in range(100):
        outcomes.append(driver.call(BALANCE, deadline=0))
        driver.now += 0.3  # 100 calls in 30 s
    refused = [o for o in outcomes if isinstance(o, ApiRateLimited)]
    assert len(driver.sends) == 60
    assert len(refused) == 40 and all(r.local and r.status is None for r in refused)


def test_a_token_failure_says_it_was_the_token_request_and_the_call_was_not_sent() -> None:
    steps = api_call(
        "https://api-sandbox.88pay.io",
        "POST",
        CHARGES,
        until=call_deadline(POLICY, 0.0, 10.0),
        policy=POLICY,
        rng=random.Random(0),
    )
    assert isinstance(next(steps), NeedToken)  # before the governor: nothing reserved
    with pytest.raises(ConnectionLost) as caught:
        steps.throw(ConnectionLost("api-sandbox.88pay.io", "reset"))
    assert caught.value.failed_request == "token request"
    assert f"Getting a token for POST {CHARGES} failed" in str(caught.value)
    assert "was not processed" in str(caught.value)
    # about the call, which was never sent, not about its token request (which may have been)
    assert caught.value.may_have_been_processed is False
    assert caught.value.may_have_been_sent is True


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    answers=st.lists(
        st.sampled_from(["ok", "503", "429", "reset", "refused", "400", "401", "garbage"]),
        min_size=1,
        max_size=8,
    ),
    path=st.sampled_from([CHARGES, BALANCE]),
    deadline=st.sampled_from([0.0, 10.0, 60.0]),
)
def test_a_call_that_may_have_been_processed_is_never_sent_again_unless_read_only(
    answers: list[str], path: str, deadline: float
) -> None:
    def answer(n: int) -> Answer:
        kind = answers[min(n, len(answers)) - 1]
        table: dict[str, Answer] = {
            "ok": OK,
            "503": SERVER_503,
            "429": envelope(429, "Rate limit exceeded.", retry_after=1),
            "reset": ConnectionLost("h", "reset"),
            "refused": ConnectError("h", "refused"),
            "400": envelope(400, "bad"),
            "401": envelope(401, "no"),
            "garbage": GARBAGE_200,
        }
        return table[kind]

    driver = Driver(answer)
    outcome = driver.call(path, deadline)
    kinds = [answers[min(i, len(answers) - 1)] for i in range(len(driver.sends))]
    processed_maybe = [k for k in kinds if k in ("503", "reset", "garbage")]
    if path == CHARGES:
        # after a 503, a reset or an unreadable 2xx nothing more is sent
        assert len(processed_maybe) <= 1
        if processed_maybe:
            assert kinds[-1] in ("503", "reset", "garbage")
    # every send starts within the deadline (the one 401 replay follows its answer at once)
    assert all(t <= deadline + LATENCY for t, _ in driver.sends)
    assert len(driver.sends) <= 60  # POLICY.api_per_minute
    if isinstance(outcome, ApiError) and outcome.status == 400:
        assert kinds[-1] == "400"
    if isinstance(outcome, EightyEightPayError) and path == CHARGES:
        # every error answers it, and truly: True exactly when the charge may have been made
        assert outcome.may_have_been_processed is bool(processed_maybe)


def test_a_send_reserved_too_late_to_go_out_is_given_back_to_the_window() -> None:
    """The token came so late that less than a first attempt's time is left once the send
    is reserved: the call ends in DeadlineExceeded without sending, and its place in the
    window is given back (kept, a retry loop at the limit lost a place each time)."""

    class LateToken(Driver):
        def token(self, until: Deadline) -> Token:
            self.now = until.at - MIN_ATTEMPT / 2
            return token()

    driver = LateToken(scripted(OK))
    outcome = driver.call(BALANCE, deadline=5.0)
    assert isinstance(outcome, DeadlineExceeded) and not outcome.may_have_been_processed
    assert driver.sends == []
    assert driver.machine.api_window.count(driver.now, 60.0) == 0
