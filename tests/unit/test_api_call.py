"""The API-call protocol, driven by hand: replay rules without sockets or clocks."""

from __future__ import annotations

import random
from collections.abc import Generator
from typing import Any

import pytest

from eightyeightpay import (
    ApiRateLimited,
    ApiResponse,
    ConfigurationError,
    ConnectError,
    Policy,
    Token,
)
from eightyeightpay.api import (
    ApiPermit,
    InvalidateToken,
    NeedToken,
    Now,
    ReserveApiCall,
    SendApiRequest,
    WallNow,
    api_call,
    send_left,
)
from eightyeightpay.errors import (
    NOT_SENT,
    ConnectionLost,
    MalformedResponse,
    ManagerClosed,
    Unauthorized,
    note_not_sent,
)
from eightyeightpay.fleet import Sleep
from eightyeightpay.http import HttpRequest, HttpResponse
from eightyeightpay.policy import call_deadline
from tests.support import jwt

POLICY = Policy()


def token(n: int) -> Token:
    return Token.issue(
        jwt(nonce=n), f"sess_{n}", sent_at=0.0, lifetime=60, merchant_id="M", policy=POLICY
    )


def drive(
    steps: Generator[Any, Any, ApiResponse], answers: list[object]
) -> tuple[ApiResponse, list[str]]:
    """Answer every send from ``answers``; record what the protocol asked for."""
    seen: list[str] = []
    tokens = iter([token(1), token(2)])
    result: Any = None
    now = 0.0
    while True:
        try:
            effect = steps.send(result)
        except StopIteration as done:
            return done.value, seen
        if isinstance(effect, NeedToken):
            result = next(tokens)
            seen.append(f"token {result.session_id}")
        elif isinstance(effect, InvalidateToken):
            seen.append(f"invalidate {effect.token.session_id}")
            result = True
        elif isinstance(effect, ReserveApiCall):
            result = ApiPermit(now, 0.0)
        elif isinstance(effect, Sleep):
            now += effect.seconds
            seen.append("sleep")
            result = None
        elif isinstance(effect, Now):
            result = now
        elif isinstance(effect, WallNow):
            result = None  # no wall clock here: a Retry-After date is ignored
        else:
            assert isinstance(effect, SendApiRequest)
            assert effect.reserved_at == now  # the permit's time: the send's reservation
            seen.append(f"send {effect.request.header('x-session-id')}")
            result = answers.pop(0)


def call(deadline: float = 10.0) -> Generator[Any, Any, ApiResponse]:
    return api_call(
        "https://api.88pay.io",
        "POST",
        "/api/transactions/charges",
        json={"amount": 1},
        until=call_deadline(POLICY, 0.0, deadline),
        policy=POLICY,
        rng=random.Random(0),
    )


def test_a_401_invalidates_exactly_that_token_and_replays_once_with_a_new_one() -> None:
    response, seen = drive(call(), [HttpResponse(401), HttpResponse(200, (), b'{"ok":1}')])
    assert response.status == 200 and response.json == {"ok": 1} and response.data is None
    assert seen == [
        "token sess_1",
        "send sess_1",
        "invalidate sess_1",
        "token sess_2",
        "send sess_2",
    ]


def test_a_second_401_is_raised_not_replayed_again() -> None:
    with pytest.raises(Unauthorized):
        drive(call(), [HttpResponse(401), HttpResponse(401)])


def test_a_call_that_never_left_is_sent_once_more_after_a_backoff() -> None:
    response, seen = drive(call(), [ConnectError("h", "refused"), HttpResponse(200, (), b"{}")])
    assert response.status == 200
    assert seen == [
        "token sess_1",
        "send sess_1",
        "sleep",
        "token sess_2",
        "send sess_2",
    ]


def test_a_call_that_never_left_is_not_retried_past_the_deadline() -> None:
    with pytest.raises(ConnectError):
        drive(call(deadline=0.0), [ConnectError("h", "refused"), HttpResponse(200)])


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "api/balance"),
        ("P0ST", "/api/balance"),
        ("PÖST", "/api/balance"),
        ("POST", "/api/bälance"),
    ],
)
def test_a_mistaken_call_is_refused_before_it_asks_for_a_token(method: str, path: str) -> None:
    steps = api_call(
        "https://api-sandbox.88pay.io",
        method,
        path,
        until=call_deadline(POLICY, 0.0, 10.0),
        policy=POLICY,
        rng=random.Random(0),
    )
    with pytest.raises(ConfigurationError):
        next(steps)  # the first steps would spend an API call and a token for nothing


def test_a_callers_headers_go_out_as_strings_after_the_librarys_own() -> None:
    """The request equals one built through HttpRequest's converter; values become str()."""
    steps = api_call(
        "https://api.88pay.io",
        "POST",
        "/api/balance",
        headers={"X-Trace": "abc", "X-Attempt": 2, "content-type": "text/plain"},  # type: ignore[dict-item]
        until=call_deadline(POLICY, 0.0, 10.0),
        policy=POLICY,
        rng=random.Random(0),
    )
    assert isinstance(next(steps), NeedToken)
    given = token(1)
    assert isinstance(steps.send(given), ReserveApiCall)
    sent = steps.send(ApiPermit(0.0, 0.0))
    assert isinstance(sent, SendApiRequest)
    expected = HttpRequest(
        "POST",
        "https://api.88pay.io/api/balance",
        {
            **dict(given.auth_headers()),
            "Content-Type": "application/json",
            "Content-Length": "0",
            "X-Trace": "abc",
            "X-Attempt": "2",
        },
    )
    assert sent.request == expected
    assert all(type(k) is str and type(v) is str for k, v in sent.request.headers)


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Bad": "a\r\nInjected: 1"},
        {"X-Bad\n": "a"},
        {b"X-Bytes": "a"},
        {7: "a"},
        {"X-Note": "café"},  # outside ASCII: urllib3 and h11 would each fail differently
        {"X-Nul": "a\x00b"},
        {"X Foo": "v"},
        {"": "v"},
        {"Authorization ": "x"},  # past the filter of the library's own, once
        {"Host": "elsewhere.example"},
        {"transfer-encoding": "chunked"},
        {"X-None": None},
        {"X-Bytes": b"abc"},
        {"X-Flag": True},
        {"X-Lead": " a"},
        [("X-Pairs", "a")],
    ],
)
def test_a_header_that_cannot_be_sent_is_refused_before_anything_is_spent(
    headers: dict[Any, Any],
) -> None:
    steps = api_call(
        "https://api.88pay.io",
        "POST",
        "/api/balance",
        headers=headers,
        until=call_deadline(POLICY, 0.0, 10.0),
        policy=POLICY,
        rng=random.Random(0),
    )
    with pytest.raises(ConfigurationError):
        next(steps)


def _on_a_frozen_clock(steps: Generator[Any, Any, ApiResponse], wait: float) -> list[str]:
    """Drive ``steps`` on a clock no sleep moves: the governor holds the first send ``wait``
    seconds (0: not at all), and every send is answered 429."""
    seen: list[str] = []
    result: Any = None
    while True:
        effect = steps.send(result)
        seen.append(type(effect).__name__)
        if len(seen) > 1_000:
            raise AssertionError(f"the call never ends: {seen[-20:]}")
        if isinstance(effect, ReserveApiCall):
            result = ApiPermit(0.0, wait)
            wait = 0.0
        elif isinstance(effect, NeedToken):
            result = token(1)
        elif isinstance(effect, SendApiRequest):
            result = HttpResponse(429, (("Retry-After", "1"),))
        else:
            result = 0.0 if isinstance(effect, Now) else None


@pytest.mark.parametrize("wait", [0.0, 5.0])
def test_a_call_whose_sleeps_do_not_move_its_clock_ends_as_at_its_deadline(wait: float) -> None:
    """A FakeClock without sleep=: each sleep leaves the time where it was, so the deadline
    would never come; the call counts its sleeps against it, and ends with the error its
    deadline gives (the 429, after the sleeps that fit)."""
    with pytest.raises(ApiRateLimited) as raised:
        _on_a_frozen_clock(call(deadline=30.0), wait)
    assert raised.value.status == 429


def test_a_2xx_with_an_empty_body_is_malformed_and_may_have_been_processed() -> None:
    """88Pay answers every call with an envelope: an empty 2xx (a cut-off body) tells
    nobody whether the charge was made; a 204 says there is no body, and is an answer."""
    with pytest.raises(MalformedResponse) as raised:
        drive(call(), [HttpResponse(200)])
    assert raised.value.may_have_been_processed
    response, _ = drive(call(), [HttpResponse(204)])
    assert response.status == 204 and response.json is None


def test_a_send_is_reserved_once_its_token_is_in_hand() -> None:
    """A token request that takes 5 s comes before the reservation, not between it and the
    send: the governor counts the send when 88Pay sees it (else 61 could land in a minute)."""
    steps = call()
    now, reserved_at, sent_at = 0.0, [], []
    result: Any = None
    while True:
        try:
            effect = steps.send(result)
        except StopIteration:
            break
        if isinstance(effect, NeedToken):
            now += 5.0
            result = token(1)
        elif isinstance(effect, ReserveApiCall):
            reserved_at.append(now)
            result = ApiPermit(now, 0.0)
        elif isinstance(effect, SendApiRequest):
            sent_at.append(now)
            result = HttpResponse(200, (), b"{}")
        else:
            result = now if isinstance(effect, Now) else None
    assert reserved_at == sent_at == [5.0]


@pytest.mark.parametrize(
    ("answer", "left"),
    [
        (HttpResponse(200, (), b"{}"), True),
        (ConnectionLost("api.88pay.io", "reset"), True),
        (ConnectError("api.88pay.io", "refused"), False),
    ],
    ids=["answered", "broken", "never-left"],
)
def test_each_send_carries_its_reservation_time_and_its_outcome_says_if_it_left(
    answer: object, left: bool
) -> None:
    """A send carries the time its permit counted it at, for the governor to count it again
    when it ends; ``send_left`` says whether it may have reached 88Pay (else forgotten)."""
    steps = call()
    assert isinstance(next(steps), NeedToken)
    assert isinstance(steps.send(token(1)), ReserveApiCall)
    sent = steps.send(ApiPermit(7.5, 0.0))
    assert isinstance(sent, SendApiRequest) and sent.reserved_at == 7.5
    assert send_left(answer) is left


def _noted(error: BaseException) -> BaseException:
    note_not_sent(error)
    note_not_sent(error)  # once is enough
    assert error.__notes__ == [NOT_SENT]
    return error


@pytest.mark.parametrize(
    ("cut", "left"),
    [
        (ManagerClosed(may_have_been_processed=True), True),
        (ManagerClosed(), False),
        (KeyboardInterrupt(), True),
        (_noted(KeyboardInterrupt()), False),
    ],
    ids=["closed-in-flight", "closed-before-sending", "interrupted", "interrupted-unsent"],
)
def test_a_send_cut_without_its_answer_raises_and_says_if_it_left(
    cut: BaseException, left: bool
) -> None:
    """A send stopped by a cancellation or by closing: ``send_left`` tells the governor
    whether to count it (now) or forget it; the call raises. A cancellation goes on as it
    was; ManagerClosed says what became of the call."""
    steps = call()
    assert isinstance(next(steps), NeedToken)
    assert isinstance(steps.send(token(1)), ReserveApiCall)
    assert isinstance(steps.send(ApiPermit(7.5, 0.0)), SendApiRequest)
    assert send_left(cut) is left
    with pytest.raises(type(cut)) as raised:
        steps.throw(cut)
    if isinstance(cut, ManagerClosed):
        closed = raised.value
        assert isinstance(closed, ManagerClosed)
        assert closed.may_have_been_processed is left
        assert closed.failed_request == "POST /api/transactions/charges"
    else:
        assert raised.value is cut


def test_a_call_closed_before_its_resend_says_the_first_send_may_have_been_processed() -> None:
    """A balance read broke after it may have been sent, and its retry is cut by close
    before it is sent: the call as a whole may have been processed."""
    steps = api_call(
        "https://api.88pay.io",
        "POST",
        "/api/balance",
        until=call_deadline(POLICY, 0.0, 10.0),
        policy=POLICY,
        rng=random.Random(0),
    )
    effect = next(steps)
    answers: list[object] = [ConnectionLost("api.88pay.io", "reset")]
    while True:
        if isinstance(effect, NeedToken):
            effect = steps.send(token(1))
        elif isinstance(effect, ReserveApiCall):
            effect = steps.send(ApiPermit(0.0, 0.0))
        elif isinstance(effect, SendApiRequest):
            if not answers:
                break
            effect = steps.send(answers.pop())
        else:
            effect = steps.send(0.0 if isinstance(effect, Now) else None)
    with pytest.raises(ManagerClosed) as raised:
        steps.throw(ManagerClosed())
    assert raised.value.may_have_been_processed


def test_a_call_closed_while_it_waits_for_its_token_names_itself_not_the_token_request() -> None:
    """The manager closed while the call waited (for the API limits, a backoff): the call's
    slow path for a token finds it closed. That is the call's end, not a token failure."""
    steps = call()
    assert isinstance(next(steps), NeedToken)
    with pytest.raises(ManagerClosed) as raised:
        steps.throw(ManagerClosed())
    assert raised.value.failed_request == "POST /api/transactions/charges"
    assert raised.value.may_have_been_processed is False
    assert "getting a token" not in str(raised.value).lower()


SECRET = "eyJhbGciOiJFUzI1NiJ9.c2VjcmV0.c2ln"


@pytest.mark.parametrize(
    ("method", "path", "headers", "says"),
    [
        ("POST", f"/api/balance?token= {SECRET}", None, "' ' at position 19"),
        ("POST", f"api/{SECRET}", None, "does not start with '/'"),
        ("POST", f"//{SECRET}", None, "starts with '//'"),
        (f"POST {SECRET}", "/api/balance", None, "method given"),
        ("POST", "/api/balance", {f"Authorization: Bearer {SECRET}": "x"}, "':' at position 13"),
    ],
)
def test_a_refused_path_method_or_header_name_is_not_repeated_in_the_error(
    method: str, path: str, headers: dict[str, str] | None, says: str
) -> None:
    """A token pasted where it does not belong (a whole header line as a name, a path with
    a query) is refused without repeating it: the message names one character at most."""
    steps = api_call(
        "https://api.88pay.io",
        method,
        path,
        headers=headers,
        until=call_deadline(POLICY, 0.0, 10.0),
        policy=POLICY,
        rng=random.Random(0),
    )
    with pytest.raises(ConfigurationError) as raised:
        next(steps)
    assert SECRET not in str(raised.value) and SECRET not in repr(raised.value)
    assert says in str(raised.value)
