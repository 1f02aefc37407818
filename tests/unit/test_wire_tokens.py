from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eightyeightpay import (
    AccessDenied,
    EightyEightPayError,
    Freshness,
    InvalidCredentials,
    MalformedResponse,
    Policy,
    RateLimited,
    ServerError,
)
from eightyeightpay.http import HttpResponse
from eightyeightpay.tokens import interpret_token_response
from eightyeightpay.wire import loads, read_jwt_claims
from tests.support import CREDENTIALS, error_response, jwt, ok_response, token_body

POLICY = Policy()


def interpret(response: HttpResponse, sent_at: float = 100.0):  # type: ignore[no-untyped-def]
    return interpret_token_response(
        response, sent_at=sent_at, credentials=CREDENTIALS, policy=POLICY
    )


def test_lifetime_counts_from_send_and_takes_the_shorter_of_expires_in_and_the_jwt() -> None:
    token = interpret(HttpResponse(200, (), token_body(jwt(life=45), expires_in=60)), 100.0)
    assert token.expires_at == 145.0
    token = interpret(HttpResponse(200, (), token_body(jwt(life=60), expires_in=60)), 100.0)
    assert token.expires_at == 160.0
    assert token.usable_until == 150.0
    assert token.freshness(100.0) is Freshness.FRESH
    assert token.freshness(149.0) is Freshness.STALE
    assert token.freshness(150.0) is Freshness.EXPIRED
    assert token.access_token not in repr(token) and token.session_id not in repr(token)


def test_extra_fields_are_tolerated() -> None:
    body = json.loads(token_body(jwt()))
    body["data"]["scope"] = "all"
    body["trace"] = "x"
    assert interpret(HttpResponse(200, (), json.dumps(body).encode())).session_id == "sess_1"


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"<html>Bad gateway</html>",
        b'{"status":"Success","code":200}',
        token_body(jwt(), expires_in="60"),
        token_body(jwt(), expires_in=0),
        token_body(jwt(), expires_in=-5),
        token_body(jwt(), expires_in=True),
        token_body("not-a-jwt"),
        token_body("a.b.c"),
        token_body(jwt(merchant="MCH-COL-OTHER-1")),
        json.dumps([1, 2]).encode(),
        token_body(jwt())[:40],
        # what an HTTP header cannot carry: refused on arrival, not at every call's send
        token_body(jwt(), session="sess_\u2026"),
        token_body(jwt(), session="sess_1\r\nX-Injected: yes"),
        token_body(jwt(), session="sess 1"),
        token_body(jwt() + "\u2026"),
        token_body(jwt() + "\r\nX-Injected: yes"),
    ],
)
def test_malformed_token_responses_are_typed_errors(body: bytes) -> None:
    with pytest.raises(MalformedResponse):
        interpret(HttpResponse(200, (), body))


@pytest.mark.parametrize(
    ("status", "processed"), [(302, True), (418, False), (600, True), (999, True)]
)
def test_an_unexpected_token_status_is_malformed_and_only_a_4xx_says_not_processed(
    status: int, processed: bool
) -> None:
    with pytest.raises(MalformedResponse) as caught:
        interpret(error_response(status, "odd"))
    assert caught.value.status == status
    assert caught.value.may_have_been_processed is processed


def test_documented_errors_map_to_their_types_with_causes() -> None:
    with pytest.raises(InvalidCredentials, match="sandbox key"):
        interpret(error_response(401, "Invalid API key or merchant ID"))
    with pytest.raises(AccessDenied, match="KYC"):
        interpret(error_response(403, "Access denied"))
    with pytest.raises(RateLimited) as limited:
        interpret(
            HttpResponse(
                429,
                (("Retry-After", "17"),),
                json.dumps(
                    {"status": "Error", "code": 429, "message": "m", "retry_after": 12}
                ).encode(),
            )
        )
    assert limited.value.retry_after == 17 and not limited.value.local
    with pytest.raises(ServerError):
        interpret(HttpResponse(502, (), b"<html>bad gateway</html>"))


@given(st.binary(max_size=300))
def test_any_body_gives_a_token_or_a_typed_error(body: bytes) -> None:
    with contextlib.suppress(EightyEightPayError):
        interpret(HttpResponse(200, (), body))


@given(st.text(max_size=200))
def test_any_jwt_text_gives_claims_or_a_typed_error(text: str) -> None:
    with contextlib.suppress(MalformedResponse):
        read_jwt_claims(text)


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
        lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
        max_leaves=20,
    )
)
def test_any_json_in_data_gives_a_token_or_a_typed_error(data: object) -> None:
    body = json.dumps({"status": "Success", "code": 200, "data": data}).encode()
    with pytest.raises(MalformedResponse):
        interpret(HttpResponse(200, (), body))


def test_ok_helper_is_really_accepted() -> None:
    assert interpret(ok_response(3)).session_id == "sess_3"


def test_retry_after_as_an_http_date_is_read_against_the_wall_clock() -> None:
    import email.utils

    wall = 1_800_000_000.0
    date = email.utils.formatdate(wall + 45, usegmt=True)
    response = HttpResponse(
        429, (("Retry-After", date),), b'{"status":"Error","code":429,"message":"m"}'
    )
    with pytest.raises(RateLimited) as limited:
        interpret_token_response(
            response, sent_at=0.0, credentials=CREDENTIALS, policy=POLICY, wall_now=wall
        )
    assert limited.value.retry_after == pytest.approx(45)
    with pytest.raises(RateLimited) as without_clock:
        interpret(response)
    assert without_clock.value.retry_after == 0  # unknown: the backoff schedule decides
    garbage = HttpResponse(429, (("Retry-After", "soon"),), b"")
    with pytest.raises(RateLimited):
        interpret_token_response(
            garbage, sent_at=0.0, credentials=CREDENTIALS, policy=POLICY, wall_now=wall
        )


@given(st.text(max_size=60), st.none() | st.floats(0, 4e9))
def test_any_retry_after_header_gives_seconds_or_nothing(value: str, wall: float | None) -> None:
    from eightyeightpay.tokens import parse_retry_after

    response = HttpResponse(429, (("Retry-After", value),), b"")
    seconds = parse_retry_after(response, None, wall)
    assert seconds is None or 0 <= seconds <= 3600


@pytest.mark.parametrize(
    "date",
    [
        "Sun, 06 Nov 1994 08:49:37 GMT",  # IMF-fixdate
        "Sunday, 06-Nov-94 08:49:37 GMT",  # RFC 850
        "Sun Nov  6 08:49:37 1994",  # asctime
    ],
)
def test_a_retry_after_date_is_read_in_each_form_http_accepts(date: str) -> None:
    from eightyeightpay.tokens import parse_retry_after

    response = HttpResponse(429, (("Retry-After", date),), b"")
    assert parse_retry_after(response, None, wall_now=784111777.0 - 30) == 30.0


@pytest.mark.parametrize(
    ("header", "body", "seconds"),
    [
        ("86400", None, 3600.0),  # a day: cut to the longest limit window
        ("7", None, 7.0),
        (None, 1e308, 3600.0),  # the body's, absurd: cut too
        ("99999999999", None, None),  # two days or more in the header: garbage
    ],
)
def test_a_429s_wait_is_never_longer_than_the_longest_limit_window(
    header: str | None, body: float | None, seconds: float | None
) -> None:
    from eightyeightpay.tokens import error_envelope, parse_retry_after

    headers = (("Retry-After", header),) if header is not None else ()
    payload = {"status": "Error", "code": 429, "message": "Rate limit exceeded"}
    if body is not None:
        payload["retry_after"] = body
    response = HttpResponse(429, headers, json.dumps(payload).encode())
    assert parse_retry_after(response, error_envelope(response)) == seconds


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


def _outcome(body: bytes, decode: Callable[[bytes], Any]) -> tuple[str, Any]:
    try:
        return "value", decode(body)
    except (ValueError, RecursionError) as error:
        return "error", type(error)


_AROUND = ["", " ", "\n\t", "\r\n", "x", "}", "\x00", "\ufeff"]
_ENCODINGS = ["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-32"]


@given(_JSON)
def test_the_fast_json_decode_answers_as_json_loads(value: object) -> None:
    """wire.loads gives json.loads' value, or the same kind of error, for any JSON value with
    anything around it (whitespace, extra data, a byte order mark), in any encoding."""
    text = json.dumps(value, ensure_ascii=False)
    for before in _AROUND:
        for after in _AROUND:
            for encoding in _ENCODINGS:
                body = (before + text + after).encode(encoding)
                assert _outcome(body, loads) == _outcome(body, json.loads), body


@given(st.binary(max_size=40))
def test_the_fast_json_decode_answers_any_bytes_as_json_loads(body: bytes) -> None:
    """wire.loads gives json.loads' value, or the same kind of error, for any bytes."""
    assert _outcome(body, loads) == _outcome(body, json.loads)
