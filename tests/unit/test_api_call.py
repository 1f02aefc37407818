"""The API-call protocol, driven by hand: replay rules without sockets or clocks."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

from eightyeightpay import (
    ApiResponse,
    ConfigurationError,
    ConnectError,
    ConnectionLost,
    Policy,
    Token,
)
from eightyeightpay.api import InvalidateToken, NeedToken, SendApiRequest, api_call
from eightyeightpay.http import HttpResponse
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
        else:
            assert isinstance(effect, SendApiRequest)
            seen.append(f"send {effect.request.header('x-session-id')}")
            result = answers.pop(0)


def call() -> Generator[Any, Any, ApiResponse]:
    return api_call("https://api.88pay.io", "POST", "/api/transactions/charges", json={"amount": 1})


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


def test_a_second_401_is_returned_not_replayed_again() -> None:
    response, seen = drive(call(), [HttpResponse(401), HttpResponse(401)])
    assert response.status == 401 and seen.count("send sess_2") == 1 and len(seen) == 5


def test_a_call_that_never_left_is_sent_once_more() -> None:
    response, seen = drive(call(), [ConnectError("h", "refused"), HttpResponse(200)])
    assert response.status == 200 and seen == ["token sess_1", "send sess_1", "send sess_1"]


def test_a_charge_that_may_have_arrived_is_never_sent_again() -> None:
    with pytest.raises(ConnectionLost):
        drive(call(), [ConnectionLost("h", "reset")])


def test_a_call_that_never_left_twice_raises() -> None:
    with pytest.raises(ConnectError):
        drive(call(), [ConnectError("h", "refused"), ConnectError("h", "refused")])


@pytest.mark.parametrize(("method", "path"), [("POST", "api/balance"), ("P0ST", "/api/balance")])
def test_a_mistaken_call_is_refused_before_it_asks_for_a_token(method: str, path: str) -> None:
    steps = api_call("https://api-sandbox.88pay.io", method, path)
    with pytest.raises(ConfigurationError):
        next(steps)  # the first step would be NeedToken: a token request spent for nothing
