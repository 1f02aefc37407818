"""The sandbox emulator, driven in-process with a FakeClock: no sockets, no sleeping."""

from __future__ import annotations

import base64
import json
import math
import re
import threading
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from hypothesis import given, settings
from hypothesis import strategies as st

from eightyeightpay.errors import ConnectError, ConnectionLost, RequestTimeout
from eightyeightpay.http import HttpRequest, HttpResponse
from eightyeightpay.plugins.sandbox import (
    BALANCE_PATH,
    CHARGES_PATH,
    DEFAULT_API_KEY,
    DEFAULT_MERCHANT_ID,
    IP_BLOCKED_API_KEY,
    IP_BLOCKED_MERCHANT_ID,
    KYC_PENDING_API_KEY,
    KYC_PENDING_MERCHANT_ID,
    STAT_NAMES,
    SUSPENDED_API_KEY,
    SUSPENDED_MERCHANT_ID,
    TOKEN_PATH,
    AccountStatus,
    ConnectionFault,
    FakeClock,
    Fault,
    FaultKind,
    Sandbox,
    SandboxTransport,
)

BASE = "https://api-sandbox.88pay.io"
START = 1_800_000_000.0
OTHER_KEY = "sk_test_second_merchant_0a1b2c3d"
OTHER_MERCHANT = "MCH-MEX-OTHER-777"

INVALID_CREDENTIALS = {"status": "Error", "code": 401, "message": "Invalid API key or merchant ID"}
ACCESS_DENIED = {"status": "Error", "code": 403, "message": "Access denied"}
RATE_LIMITED_MESSAGE = "Rate limit exceeded. Please try again later."

VALID_CHARGE: dict[str, Any] = {
    "flow": "PAYIN",
    "method_code": "PSE",
    "amount": 150000,
    "currency": "COP",
    "country": "COL",
    "description": "Order 1001",
    "customer_id": "cus_42",
    "notification_url": "https://merchant.example/hooks/88pay",
    "return_url": "https://merchant.example/thanks",
}


# --------------------------------------------------------------------------- helpers


def token_request(
    sandbox: Sandbox,
    now: float = START,
    api_key: str | None = DEFAULT_API_KEY,
    merchant_id: str | None = DEFAULT_MERCHANT_ID,
) -> HttpResponse:
    headers = []
    if api_key is not None:
        headers.append(("x-api-key", api_key))
    if merchant_id is not None:
        headers.append(("x-merchant-id", merchant_id))
    reply = sandbox.handle(HttpRequest("POST", BASE + TOKEN_PATH, tuple(headers)), now)
    assert reply.response is not None
    assert reply.connection_fault is None
    return reply.response


def body(response: HttpResponse) -> dict[str, Any]:
    value = json.loads(response.body)
    assert isinstance(value, dict)
    return value


def issue(sandbox: Sandbox, now: float = START, **kwargs: Any) -> tuple[str, str]:
    response = token_request(sandbox, now, **kwargs)
    assert response.status == 200, response.body
    data = body(response)["data"]
    return data["access_token"], data["session_id"]


def api_call(
    sandbox: Sandbox,
    path: str,
    token: str | None,
    session_id: str | None,
    now: float = START,
    payload: object = None,
    raw: bytes | None = None,
    method: str = "POST",
) -> HttpResponse:
    headers = [("Content-Type", "application/json")]
    if token is not None:
        headers.append(("Authorization", f"Bearer {token}"))
    if session_id is not None:
        headers.append(("x-session-id", session_id))
    data = raw if raw is not None else (b"" if payload is None else json.dumps(payload).encode())
    reply = sandbox.handle(HttpRequest(method, BASE + path, tuple(headers), data), now)
    assert reply.response is not None
    return reply.response


def charge(sandbox: Sandbox, token: str, sid: str, payload: object, now: float = START) -> Any:
    return api_call(sandbox, CHARGES_PATH, token, sid, now, payload=payload)


def balance_path(merchant_id: str = DEFAULT_MERCHANT_ID) -> str:
    return f"{BALANCE_PATH}?id={merchant_id}"


def b64decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def verify_independently(token: str, public_pem: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    """Check an ES256 JWT with cryptography alone (not the sandbox's own verifier)."""
    key = serialization.load_pem_public_key(public_pem)
    assert isinstance(key, ec.EllipticCurvePublicKey)
    assert isinstance(key.curve, ec.SECP256R1)
    header_segment, payload_segment, signature_segment = token.split(".")
    raw = b64decode(signature_segment)
    assert len(raw) == 64
    signature = encode_dss_signature(
        int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")
    )
    key.verify(signature, f"{header_segment}.{payload_segment}".encode(), ec.ECDSA(hashes.SHA256()))
    return json.loads(b64decode(header_segment)), json.loads(b64decode(payload_segment))


@pytest.fixture
def sandbox() -> Sandbox:
    return Sandbox()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


# --------------------------------------------------------------------------- FakeClock


def test_fake_clock_starts_at_the_given_time_and_only_moves_when_advanced() -> None:
    clock = FakeClock()
    assert clock() == 1_800_000_000.0
    assert clock() == clock.now() == 1_800_000_000.0
    assert clock.advance(2.5) == 1_800_000_002.5
    assert clock() == 1_800_000_002.5


@pytest.mark.parametrize("bad", [-1.0, math.inf, math.nan])
def test_fake_clock_refuses_to_go_backwards_or_to_infinity(bad: float) -> None:
    clock = FakeClock(10.0)
    with pytest.raises(ValueError):
        clock.advance(bad)
    assert clock() == 10.0


def test_fake_clock_loses_no_advance_under_concurrent_threads() -> None:
    clock = FakeClock(0.0)

    def worker() -> None:
        for _ in range(1000):
            clock.advance(1.0)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert clock() == 8000.0


# --------------------------------------------------------------------------- tokens


def test_token_success_has_exactly_the_documented_envelope(sandbox: Sandbox) -> None:
    response = token_request(sandbox)
    assert response.status == 200
    assert response.header("Content-Type") == "application/json"
    envelope = body(response)
    assert set(envelope) == {"status", "code", "message", "data"}
    assert envelope["status"] == "Success"
    assert envelope["code"] == 200
    assert envelope["message"] == "Token generated successfully"
    data = envelope["data"]
    assert set(data) == {"access_token", "expires_in", "session_id"}
    assert data["expires_in"] == 60
    assert re.fullmatch(
        r"sess_[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}",
        data["session_id"],
    )
    assert response.header("X-RateLimit-Limit") == "10"
    assert response.header("X-RateLimit-Remaining") == "9"
    assert response.header("X-RateLimit-Reset") == str(int(START) + 60)


def test_token_is_an_es256_jwt_whose_signature_and_claims_verify(sandbox: Sandbox) -> None:
    now = START + 0.75
    token, session_id = issue(sandbox, now)
    header, claims = verify_independently(token, sandbox.public_key_pem())
    assert header == {"alg": "ES256", "typ": "JWT"}
    assert claims["merchant_id"] == DEFAULT_MERCHANT_ID
    assert claims["iat"] == int(now)
    assert claims["exp"] == int(now) + 60
    assert claims["sid"] == session_id
    assert isinstance(claims["jti"], str) and claims["jti"]


def test_token_signature_does_not_verify_with_another_sandboxs_key(sandbox: Sandbox) -> None:
    token, _ = issue(sandbox)
    with pytest.raises(InvalidSignature):
        verify_independently(token, Sandbox().public_key_pem())


def test_two_tokens_issued_in_the_same_second_differ(sandbox: Sandbox) -> None:
    first, first_session = issue(sandbox, START)
    second, second_session = issue(sandbox, START + 0.5)
    assert first != second
    assert first_session != second_session


def test_token_lifetime_option_sets_expires_in_and_the_jwt_lifetime() -> None:
    sandbox = Sandbox(token_lifetime=5)
    response = token_request(sandbox)
    assert body(response)["data"]["expires_in"] == 5
    _, claims = verify_independently(
        body(response)["data"]["access_token"], sandbox.public_key_pem()
    )
    assert claims["exp"] - claims["iat"] == 5


@pytest.mark.parametrize("lifetime", [0, -5])
def test_token_lifetime_must_be_positive(lifetime: int) -> None:
    with pytest.raises(ValueError):
        Sandbox(token_lifetime=lifetime)


def test_token_request_ignores_a_body_and_headers_are_case_insensitive(sandbox: Sandbox) -> None:
    request = HttpRequest(
        "POST",
        BASE + TOKEN_PATH,
        (("X-API-KEY", DEFAULT_API_KEY), ("X-Merchant-Id", DEFAULT_MERCHANT_ID)),
        b"ignored",
    )
    reply = sandbox.handle(request, START)
    assert reply.response is not None and reply.response.status == 200


# --------------------------------------------------------------------------- 401 and 403


@pytest.mark.parametrize(
    ("api_key", "merchant_id"),
    [
        pytest.param("sk_test_unknown_000000000000", DEFAULT_MERCHANT_ID, id="unknown-key"),
        pytest.param(DEFAULT_API_KEY, "MCH-COL-OTHER-99999", id="wrong-merchant-for-key"),
        pytest.param(DEFAULT_API_KEY, SUSPENDED_MERCHANT_ID, id="another-merchants-id"),
        pytest.param(None, DEFAULT_MERCHANT_ID, id="missing-api-key"),
        pytest.param(DEFAULT_API_KEY, None, id="missing-merchant-id"),
        pytest.param("", "", id="empty-headers"),
        pytest.param("sk_live_4f3a9c2e7b1d00000000", DEFAULT_MERCHANT_ID, id="live-key"),
        pytest.param(DEFAULT_API_KEY + " ", DEFAULT_MERCHANT_ID, id="stray-whitespace"),
    ],
)
def test_bad_credentials_get_401_invalid_api_key(
    sandbox: Sandbox, api_key: str | None, merchant_id: str | None
) -> None:
    response = token_request(sandbox, api_key=api_key, merchant_id=merchant_id)
    assert response.status == 401
    assert body(response) == INVALID_CREDENTIALS
    stats = sandbox.stats()
    assert stats["unauthorized"] == 1
    assert stats["token_requests"] == 1
    assert stats["tokens_issued"] == 0


@pytest.mark.parametrize(
    ("api_key", "merchant_id"),
    [
        (KYC_PENDING_API_KEY, KYC_PENDING_MERCHANT_ID),
        (SUSPENDED_API_KEY, SUSPENDED_MERCHANT_ID),
        (IP_BLOCKED_API_KEY, IP_BLOCKED_MERCHANT_ID),
    ],
)
def test_restricted_accounts_get_403_access_denied(
    sandbox: Sandbox, api_key: str, merchant_id: str
) -> None:
    response = token_request(sandbox, api_key=api_key, merchant_id=merchant_id)
    assert response.status == 403
    assert body(response) == ACCESS_DENIED
    assert sandbox.stats()["forbidden"] == 1
    assert sandbox.stats()["tokens_issued"] == 0


def test_the_restricted_accounts_have_distinct_keys_and_statuses(sandbox: Sandbox) -> None:
    by_merchant = {account.merchant_id: account for account in sandbox.accounts}
    assert by_merchant[DEFAULT_MERCHANT_ID].status is AccountStatus.ACTIVE
    assert by_merchant[KYC_PENDING_MERCHANT_ID].status is AccountStatus.KYC_PENDING
    assert by_merchant[SUSPENDED_MERCHANT_ID].status is AccountStatus.SUSPENDED
    assert by_merchant[IP_BLOCKED_MERCHANT_ID].status is AccountStatus.IP_BLOCKED
    keys = {account.api_key for account in sandbox.accounts}
    assert len(keys) == 4
    assert all(key.startswith("sk_test_") for key in keys)


def test_added_account_gets_tokens_and_a_replaced_one_takes_the_new_status(
    sandbox: Sandbox,
) -> None:
    sandbox.add_account(OTHER_KEY, OTHER_MERCHANT, currency="MXN")
    token, _ = issue(sandbox, api_key=OTHER_KEY, merchant_id=OTHER_MERCHANT)
    _, claims = verify_independently(token, sandbox.public_key_pem())
    assert claims["merchant_id"] == OTHER_MERCHANT
    sandbox.add_account(OTHER_KEY, OTHER_MERCHANT, AccountStatus.SUSPENDED)
    response = token_request(sandbox, START + 1, api_key=OTHER_KEY, merchant_id=OTHER_MERCHANT)
    assert response.status == 403


def test_add_account_refuses_live_keys(sandbox: Sandbox) -> None:
    with pytest.raises(ValueError, match="sk_test_"):
        sandbox.add_account("sk_live_4f3a9c2e7b1d00000000", OTHER_MERCHANT)
    assert len(sandbox.accounts) == 4


def test_a_sandbox_can_start_with_only_the_accounts_given() -> None:
    sandbox = Sandbox(accounts=[])
    assert sandbox.accounts == ()
    assert token_request(sandbox).status == 401


# --------------------------------------------------------------------------- token rate limits


def test_eleventh_token_request_in_a_minute_gets_the_exact_429(sandbox: Sandbox) -> None:
    for second in range(10):
        response = token_request(sandbox, START + second)
        assert response.status == 200
        assert response.header("X-RateLimit-Remaining") == str(9 - second)
    limited = token_request(sandbox, START + 10)
    assert limited.status == 429
    assert limited.header("Content-Type") == "application/json"
    assert body(limited) == {
        "status": "Error",
        "code": 429,
        "message": RATE_LIMITED_MESSAGE,
        "retry_after": 50,
    }
    assert limited.header("Retry-After") == "50"
    assert limited.header("X-RateLimit-Limit") == "10"
    assert limited.header("X-RateLimit-Remaining") == "0"
    assert limited.header("X-RateLimit-Reset") == str(int(START) + 60)
    assert sandbox.stats()["rate_limited"] == 1


def test_retry_after_is_exactly_when_the_next_token_request_is_allowed(sandbox: Sandbox) -> None:
    for second in range(10):
        assert token_request(sandbox, START + second).status == 200
    limited = token_request(sandbox, START + 30.25)
    retry_after = body(limited)["retry_after"]
    assert retry_after == math.ceil(60 - 30.25) == 30
    assert token_request(sandbox, START + 59.999).status == 429
    assert token_request(sandbox, START + 30.25 + retry_after).status == 200


def test_rejected_429s_do_not_extend_the_wait(sandbox: Sandbox) -> None:
    for _ in range(10):
        assert token_request(sandbox, START).status == 200
    for step in range(1, 60):
        assert token_request(sandbox, START + step).status == 429
    assert token_request(sandbox, START + 60).status == 200


def test_hundred_and_first_token_request_in_an_hour_gets_429_with_the_hour_limit(
    sandbox: Sandbox,
) -> None:
    # One every 6 s never trips the minute window, so only the hour limit can bite.
    for index in range(100):
        assert token_request(sandbox, START + 6 * index).status == 200, index
    limited = token_request(sandbox, START + 600)
    assert limited.status == 429
    assert body(limited)["retry_after"] == 3000
    assert limited.header("Retry-After") == "3000"
    assert limited.header("X-RateLimit-Limit") == "100"
    assert limited.header("X-RateLimit-Remaining") == "0"
    assert limited.header("X-RateLimit-Reset") == str(int(START) + 3600)
    assert token_request(sandbox, START + 3599).status == 429
    assert token_request(sandbox, START + 3600).status == 200


def test_success_headers_report_the_tighter_window(sandbox: Sandbox) -> None:
    for index in range(98):
        assert token_request(sandbox, START + 12 * index).status == 200
    response = token_request(sandbox, START + 12 * 98)
    # Minute window: 10 - 5 = 5 left; hour window: 100 - 99 = 1 left: the hour is reported.
    assert response.header("X-RateLimit-Limit") == "100"
    assert response.header("X-RateLimit-Remaining") == "1"
    assert response.header("X-RateLimit-Reset") == str(int(START) + 3600)


def test_token_limits_are_per_merchant(sandbox: Sandbox) -> None:
    sandbox.add_account(OTHER_KEY, OTHER_MERCHANT)
    for _ in range(10):
        assert token_request(sandbox).status == 200
    assert token_request(sandbox).status == 429
    assert token_request(sandbox, api_key=OTHER_KEY, merchant_id=OTHER_MERCHANT).status == 200


def test_401s_do_not_count_against_the_merchants_limit(sandbox: Sandbox) -> None:
    for _ in range(30):
        assert token_request(sandbox, api_key="sk_test_wrong_00000000").status == 401
    for _ in range(10):
        assert token_request(sandbox).status == 200


def test_403s_count_against_the_merchants_limit(sandbox: Sandbox) -> None:
    for _ in range(10):
        response = token_request(
            sandbox, api_key=SUSPENDED_API_KEY, merchant_id=SUSPENDED_MERCHANT_ID
        )
        assert response.status == 403
    response = token_request(sandbox, api_key=SUSPENDED_API_KEY, merchant_id=SUSPENDED_MERCHANT_ID)
    assert response.status == 429


def test_reset_limits_forgets_the_windows(sandbox: Sandbox) -> None:
    for _ in range(10):
        token_request(sandbox)
    assert token_request(sandbox).status == 429
    sandbox.reset_limits()
    assert token_request(sandbox).status == 200


def _model_wait(accepted: list[float], now: float) -> float:
    """Seconds until a reference model of the two windows would accept a request."""
    wait = 0.0
    for limit, window in ((10, 60.0), (100, 3600.0)):
        inside = [t for t in accepted if t + window > now]
        if len(inside) >= limit:
            wait = max(wait, inside[len(inside) - limit] + window - now)
    return wait


@settings(max_examples=40, deadline=None, derandomize=True)
@given(st.lists(st.integers(min_value=0, max_value=240), min_size=1, max_size=150))
def test_token_limiter_matches_a_reference_model_of_both_windows(steps: list[int]) -> None:
    sandbox = Sandbox()
    now = START
    accepted: list[float] = []
    for step in steps:
        now += step / 4  # quarter seconds: exact in binary floating point
        wait = _model_wait(accepted, now)
        response = token_request(sandbox, now)
        if wait == 0:
            assert response.status == 200
            accepted.append(now)
        else:
            assert response.status == 429
            assert body(response)["retry_after"] == max(1, math.ceil(wait))
            assert response.header("Retry-After") == str(body(response)["retry_after"])
    for index, moment in enumerate(accepted):
        assert sum(1 for t in accepted[: index + 1] if t + 60 > moment) <= 10
        assert sum(1 for t in accepted[: index + 1] if t + 3600 > moment) <= 100


def test_concurrent_token_requests_never_exceed_the_minute_limit(sandbox: Sandbox) -> None:
    statuses: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(5):
            status = token_request(sandbox, START).status
            with lock:
                statuses.append(status)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses.count(200) == 10
    assert statuses.count(429) == 30
    assert sandbox.stats()["tokens_issued"] == 10
    assert sandbox.stats()["token_requests"] == 40


# --------------------------------------------------------------------------- using tokens


def test_a_token_works_until_its_exp_and_then_gets_401_token_expired(
    sandbox: Sandbox, clock: FakeClock
) -> None:
    token, sid = issue(sandbox, clock())
    clock.advance(59.5)
    assert api_call(sandbox, balance_path(), token, sid, clock()).status == 200
    clock.advance(0.5)
    expired = api_call(sandbox, balance_path(), token, sid, clock())
    assert expired.status == 401
    assert body(expired) == {"status": "Error", "code": 401, "message": "Token expired"}
    assert sandbox.stats()["expired_token_rejections"] == 1
    assert sandbox.stats()["unauthorized"] == 1


def test_a_short_lifetime_expires_tokens_sooner(clock: FakeClock) -> None:
    sandbox = Sandbox(token_lifetime=3)
    token, sid = issue(sandbox, clock())
    clock.advance(2)
    assert api_call(sandbox, balance_path(), token, sid, clock()).status == 200
    clock.advance(1)
    assert api_call(sandbox, balance_path(), token, sid, clock()).status == 401


def test_an_older_token_stays_valid_after_a_newer_one_is_issued(sandbox: Sandbox) -> None:
    old, old_sid = issue(sandbox, START)
    issue(sandbox, START + 30)
    assert api_call(sandbox, balance_path(), old, old_sid, START + 31).status == 200


@pytest.mark.parametrize("session", ["sess_not-the-right-one", "", None])
def test_a_token_needs_its_own_session_id(sandbox: Sandbox, session: str | None) -> None:
    token, _ = issue(sandbox)
    response = api_call(sandbox, balance_path(), token, session)
    assert response.status == 401
    assert body(response) == {"status": "Error", "code": 401, "message": "Invalid session"}


def test_a_session_id_from_another_token_is_rejected(sandbox: Sandbox) -> None:
    first, _ = issue(sandbox)
    _, second_sid = issue(sandbox)
    response = api_call(sandbox, balance_path(), first, second_sid)
    assert body(response)["message"] == "Invalid session"


def test_a_token_signed_by_another_key_is_rejected(sandbox: Sandbox) -> None:
    foreign, sid = issue(Sandbox())
    response = api_call(sandbox, balance_path(), foreign, sid)
    assert response.status == 401
    assert body(response)["message"] == "Invalid token"


def test_a_tampered_payload_is_rejected(sandbox: Sandbox) -> None:
    token, sid = issue(sandbox)
    header_segment, _, signature = token.split(".")
    forged_claims = {
        "merchant_id": DEFAULT_MERCHANT_ID,
        "iat": int(START),
        "exp": int(START) + 10_000,
        "sid": sid,
    }
    forged = base64.urlsafe_b64encode(json.dumps(forged_claims).encode()).rstrip(b"=").decode()
    response = api_call(sandbox, balance_path(), f"{header_segment}.{forged}.{signature}", sid)
    assert response.status == 401
    assert body(response)["message"] == "Invalid token"


@pytest.mark.parametrize("token", [None, "", "garbage", "a.b.c", "a.b"])
def test_missing_or_garbage_bearer_tokens_get_401(sandbox: Sandbox, token: str | None) -> None:
    response = api_call(sandbox, balance_path(), token, "sess_x")
    assert response.status == 401
    assert body(response)["status"] == "Error"
    assert sandbox.stats()["unauthorized"] == 1


def test_api_calls_have_their_own_limit_of_60_a_minute(sandbox: Sandbox) -> None:
    token, sid = issue(sandbox)
    for index in range(60):
        response = api_call(sandbox, balance_path(), token, sid, START + index * 0.5)
        assert response.status == 200, index
    limited = api_call(sandbox, balance_path(), token, sid, START + 30)
    assert limited.status == 429
    assert body(limited) == {
        "status": "Error",
        "code": 429,
        "message": RATE_LIMITED_MESSAGE,
        "retry_after": 30,
    }
    assert limited.header("X-RateLimit-Limit") == "60"
    assert limited.header("Retry-After") == "30"
    # The token budget is separate.
    assert token_request(sandbox, START + 30).status == 200


def test_api_calls_are_limited_to_1000_an_hour() -> None:
    sandbox = Sandbox(token_lifetime=3600)
    token, sid = issue(sandbox)
    for index in range(1000):
        assert api_call(sandbox, balance_path(), token, sid, START + index).status == 200
    limited = api_call(sandbox, balance_path(), token, sid, START + 1000)
    assert limited.status == 429
    assert body(limited)["retry_after"] == 2600
    assert limited.header("X-RateLimit-Limit") == "1000"


# --------------------------------------------------------------------------- charges


def test_a_valid_charge_is_created_pending_with_the_fields_echoed(sandbox: Sandbox) -> None:
    token, sid = issue(sandbox)
    response = charge(sandbox, token, sid, VALID_CHARGE)
    assert response.status == 200
    envelope = body(response)
    assert envelope["status"] == "Success"
    assert envelope["code"] == 200
    data = envelope["data"]
    assert re.fullmatch(r"txn_[0-9a-f]{24}", data["transaction_id"])
    assert data["status"] == "PENDING"
    for field in ("amount", "currency", "country", "method_code"):
        assert data[field] == VALID_CHARGE[field]
    assert sandbox.stats()["charges"] == 1
    assert sandbox.stats()["api_requests"] == 1


def test_each_charge_gets_its_own_transaction_id(sandbox: Sandbox) -> None:
    token, sid = issue(sandbox)
    ids = {body(charge(sandbox, token, sid, VALID_CHARGE))["data"]["transaction_id"] for _ in "ab"}
    assert len(ids) == 2


def test_only_required_fields_make_a_valid_charge(sandbox: Sandbox) -> None:
    token, sid = issue(sandbox)
    minimal = {k: VALID_CHARGE[k] for k in ("flow", "method_code", "amount", "currency", "country")}
    assert charge(sandbox, token, sid, minimal).status == 200


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("flow", "PAYOUT"),
        ("flow", "payin"),
        ("method_code", ""),
        ("method_code", 7),
        ("amount", 0),
        ("amount", -10.5),
        ("amount", "100"),
        ("amount", True),
        ("currency", "cop"),
        ("currency", "COPX"),
        ("currency", 170),
        ("country", "CO"),
        ("country", "col"),
        ("description", "x" * 256),
        ("description", 5),
        ("customer_id", 42),
        ("notification_url", "http://merchant.example/hook"),
        ("notification_url", "not a url"),
        ("return_url", "ftp://merchant.example/"),
    ],
)
def test_an_invalid_field_gets_422_naming_it(sandbox: Sandbox, field: str, value: object) -> None:
    token, sid = issue(sandbox)
    response = charge(sandbox, token, sid, {**VALID_CHARGE, field: value})
    assert response.status == 422
    envelope = body(response)
    assert envelope["status"] == "Error"
    assert envelope["code"] == 422
    assert f"'{field}'" in envelope["message"]
    assert sandbox.stats()["charges"] == 0


@pytest.mark.parametrize("field", ["flow", "method_code", "amount", "currency", "country"])
def test_a_missing_required_field_gets_422_naming_it(sandbox: Sandbox, field: str) -> None:
    token, sid = issue(sandbox)
    payload = {k: v for k, v in VALID_CHARGE.items() if k != field}
    response = charge(sandbox, token, sid, payload)
    assert response.status == 422
    assert body(response)["message"] == f"Missing required field '{field}'"


def test_a_description_of_exactly_255_characters_is_accepted(sandbox: Sandbox) -> None:
    token, sid = issue(sandbox)
    assert charge(sandbox, token, sid, {**VALID_CHARGE, "description": "d" * 255}).status == 200


@settings(max_examples=30, deadline=None, derandomize=True)
@given(
    st.one_of(
        st.integers(max_value=0),
        st.floats(max_value=0, allow_nan=False),
        st.just(math.inf),
    )
)
def test_no_non_positive_or_infinite_amount_is_accepted(amount: float) -> None:
    sandbox = Sandbox()
    token, sid = issue(sandbox)
    response = charge(sandbox, token, sid, {**VALID_CHARGE, "amount": amount})
    assert response.status == 422
    assert "'amount'" in body(response)["message"]


@pytest.mark.parametrize("raw", [b"", b"{not json", b"\xff\xfe", b"[1, 2]", b'"PAYIN"'])
def test_a_body_that_is_not_a_json_object_gets_400(sandbox: Sandbox, raw: bytes) -> None:
    token, sid = issue(sandbox)
    response = api_call(sandbox, CHARGES_PATH, token, sid, raw=raw)
    assert response.status == 400
    assert body(response)["code"] == 400


def test_a_charge_with_an_expired_token_is_refused_and_not_created(clock: FakeClock) -> None:
    sandbox = Sandbox()
    token, sid = issue(sandbox, clock())
    clock.advance(61)
    response = charge(sandbox, token, sid, VALID_CHARGE, clock())
    assert response.status == 401
    assert sandbox.stats()["charges"] == 0


# --------------------------------------------------------------------------- balance, routing


def test_balance_reports_the_tokens_merchant(sandbox: Sandbox) -> None:
    token, sid = issue(sandbox)
    response = api_call(sandbox, balance_path(), token, sid)
    assert response.status == 200
    data = body(response)["data"]
    assert data["merchant_id"] == DEFAULT_MERCHANT_ID
    assert isinstance(data["available"], int | float)
    assert data["currency"] == "COP"


def test_balance_of_another_merchant_is_403(sandbox: Sandbox) -> None:
    token, sid = issue(sandbox)
    response = api_call(sandbox, balance_path("MCH-COL-OTHER-1"), token, sid)
    assert response.status == 403
    assert body(response) == ACCESS_DENIED


def test_balance_without_an_id_is_422(sandbox: Sandbox) -> None:
    token, sid = issue(sandbox)
    response = api_call(sandbox, BALANCE_PATH, token, sid)
    assert response.status == 422
    assert "'id'" in body(response)["message"]


def test_unknown_path_is_404_envelope(sandbox: Sandbox) -> None:
    response = api_call(sandbox, "/api/nothing-here", None, None)
    assert response.status == 404
    assert body(response) == {"status": "Error", "code": 404, "message": "Not found"}


@pytest.mark.parametrize("path", [TOKEN_PATH, CHARGES_PATH, BALANCE_PATH])
def test_wrong_method_is_405_envelope_with_allow(sandbox: Sandbox, path: str) -> None:
    response = api_call(sandbox, path, None, None, method="GET")
    assert response.status == 405
    assert body(response)["code"] == 405
    assert response.header("Allow") == "POST"


# --------------------------------------------------------------------------- faults


def transport_for(sandbox: Sandbox, clock: FakeClock) -> SandboxTransport:
    return SandboxTransport(sandbox, clock)


def token_http_request(api_key: str = DEFAULT_API_KEY) -> HttpRequest:
    return HttpRequest(
        "POST",
        BASE + TOKEN_PATH,
        (("x-api-key", api_key), ("x-merchant-id", DEFAULT_MERCHANT_ID)),
    )


def test_transport_passes_the_clocks_time_to_the_sandbox(
    sandbox: Sandbox, clock: FakeClock
) -> None:
    clock.advance(123.9)
    response = transport_for(sandbox, clock).send(token_http_request(), timeout=5)
    _, claims = verify_independently(
        body(response)["data"]["access_token"], sandbox.public_key_pem()
    )
    assert claims["iat"] == int(START) + 123


def test_latency_within_the_timeout_delays_the_answer_on_the_fake_clock(
    sandbox: Sandbox, clock: FakeClock
) -> None:
    sandbox.inject(Fault.latency(2.5))
    response = transport_for(sandbox, clock).send(token_http_request(), timeout=5)
    assert response.status == 200
    assert clock() == START + 2.5
    assert sandbox.stats()["faults_injected"] == 1


def test_latency_beyond_the_timeout_raises_request_timeout_after_the_timeout(
    sandbox: Sandbox, clock: FakeClock
) -> None:
    sandbox.inject(Fault.latency(30))
    with pytest.raises(RequestTimeout) as caught:
        transport_for(sandbox, clock).send(token_http_request(), timeout=4)
    assert caught.value.may_have_been_sent is True
    assert clock() == START + 4
    # The request reached the server: a token was issued and the budget spent.
    assert sandbox.stats()["tokens_issued"] == 1


def test_latency_without_a_fake_clock_uses_the_given_clock_unchanged(sandbox: Sandbox) -> None:
    times = iter([START])
    transport = SandboxTransport(sandbox, clock=lambda: next(times))
    sandbox.inject(Fault.latency(0))
    assert transport.send(token_http_request(), timeout=1).status == 200


def test_status_fault_answers_500_envelope_without_processing(
    sandbox: Sandbox, clock: FakeClock
) -> None:
    sandbox.inject(Fault.status(500), times=2)
    transport = transport_for(sandbox, clock)
    for _ in range(2):
        response = transport.send(token_http_request(), timeout=5)
        assert response.status == 500
        assert body(response) == {
            "status": "Error",
            "code": 500,
            "message": "Internal Server Error",
        }
    assert transport.send(token_http_request(), timeout=5).status == 200
    stats = sandbox.stats()
    assert stats["token_requests"] == 3
    assert stats["tokens_issued"] == 1
    assert stats["faults_injected"] == 2


def test_status_fault_can_send_an_html_gateway_page(sandbox: Sandbox, clock: FakeClock) -> None:
    page = b"<html><body><h1>502 Bad Gateway</h1></body></html>"
    sandbox.inject(Fault.status(502, body=page, content_type="text/html"))
    response = transport_for(sandbox, clock).send(token_http_request(), timeout=5)
    assert response.status == 502
    assert response.body == page
    assert response.header("Content-Type") == "text/html"


def test_reset_raises_connection_lost_after_the_token_was_issued(
    sandbox: Sandbox, clock: FakeClock
) -> None:
    sandbox.inject(Fault.reset())
    transport = transport_for(sandbox, clock)
    with pytest.raises(ConnectionLost) as caught:
        transport.send(token_http_request(), timeout=5)
    assert caught.value.may_have_been_sent is True
    assert sandbox.stats()["tokens_issued"] == 1
    following = transport.send(token_http_request(), timeout=5)
    assert following.header("X-RateLimit-Remaining") == "8"


def test_refuse_raises_connect_error_and_nothing_is_processed(
    sandbox: Sandbox, clock: FakeClock
) -> None:
    sandbox.inject(Fault.refuse())
    transport = transport_for(sandbox, clock)
    with pytest.raises(ConnectError) as caught:
        transport.send(token_http_request(), timeout=5)
    assert caught.value.may_have_been_sent is False
    stats = sandbox.stats()
    assert stats["token_requests"] == 0
    assert stats["tokens_issued"] == 0
    assert stats["faults_injected"] == 1
    following = transport.send(token_http_request(), timeout=5)
    assert following.header("X-RateLimit-Remaining") == "9"


def test_truncated_answer_is_a_lost_connection_in_process_as_over_the_wire(
    sandbox: Sandbox, clock: FakeClock
) -> None:
    # Over the wire the client reads half the announced body, then the close: ConnectionLost
    # (tests/plugins/test_sandbox_server.py). In process it must be the same, not a 200.
    sandbox.inject(Fault.truncated())
    with pytest.raises(ConnectionLost) as caught:
        transport_for(sandbox, clock).send(token_http_request(), timeout=5)
    assert caught.value.may_have_been_sent and caught.value.may_have_been_processed
    assert sandbox.stats()["tokens_issued"] == 1  # processed: the token was issued


@pytest.mark.parametrize(
    "payload",
    [
        b'{"status":"Success","code":200,"data":{}}',
        b'{"status":"Success","code":200,"message":"ok","data":{"access_token":"not.a.jwt",'
        b'"expires_in":60,"session_id":"sess_x"}}',
        b"\x00\x01 not json",
    ],
)
def test_malformed_fault_answers_200_with_the_given_body(
    sandbox: Sandbox, clock: FakeClock, payload: bytes
) -> None:
    sandbox.inject(Fault.malformed(payload))
    response = transport_for(sandbox, clock).send(token_http_request(), timeout=5)
    assert response.status == 200
    assert response.body == payload
    assert sandbox.stats()["tokens_issued"] == 0


def test_a_fault_for_the_token_path_leaves_api_calls_alone(
    sandbox: Sandbox, clock: FakeClock
) -> None:
    token, sid = issue(sandbox, clock())
    sandbox.inject(Fault.status(503))
    assert api_call(sandbox, balance_path(), token, sid, clock()).status == 200
    assert sandbox.pending_faults() == 1
    assert token_request(sandbox, clock()).status == 503


def test_a_fault_with_no_path_hits_any_request(sandbox: Sandbox, clock: FakeClock) -> None:
    token, sid = issue(sandbox, clock())
    sandbox.inject(Fault.reset(), path=None)
    request = HttpRequest(
        "POST",
        BASE + CHARGES_PATH,
        (("Authorization", f"Bearer {token}"), ("x-session-id", sid)),
        json.dumps(VALID_CHARGE).encode(),
    )
    with pytest.raises(ConnectionLost):
        transport_for(sandbox, clock).send(request, timeout=5)
    # The charge reached the server: exactly why a client must not replay it blindly.
    assert sandbox.stats()["charges"] == 1


def test_faults_apply_in_injection_order_one_per_request(
    sandbox: Sandbox, clock: FakeClock
) -> None:
    sandbox.inject(Fault.status(500))
    sandbox.inject(Fault.status(502))
    statuses = [token_request(sandbox, clock()).status for _ in range(3)]
    assert statuses == [500, 502, 200]


def test_clear_faults_drops_pending_faults(sandbox: Sandbox) -> None:
    sandbox.inject(Fault.status(500), times=3)
    assert sandbox.pending_faults() == 3
    sandbox.clear_faults()
    assert sandbox.pending_faults() == 0
    assert token_request(sandbox).status == 200


def test_handle_describes_connection_faults_in_the_reply(sandbox: Sandbox) -> None:
    sandbox.inject(Fault.truncated())
    reply = sandbox.handle(token_http_request(), START)
    assert reply.connection_fault is ConnectionFault.TRUNCATE
    assert reply.response is not None
    assert reply.body_to_send == reply.response.body[: len(reply.response.body) // 2]
    sandbox.inject(Fault.refuse())
    refused = sandbox.handle(token_http_request(), START)
    assert refused.response is None
    assert refused.connection_fault is ConnectionFault.REFUSE


def test_closed_transport_sends_nothing(sandbox: Sandbox, clock: FakeClock) -> None:
    transport = transport_for(sandbox, clock)
    transport.close()
    with pytest.raises(ConnectError):
        transport.send(token_http_request(), timeout=5)
    assert sandbox.stats()["token_requests"] == 0


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"kind": "latency", "seconds": 1.5}, Fault.latency(1.5)),
        ({"kind": "status", "code": 500}, Fault.status(500)),
        (
            {"kind": "status", "code": 502, "body": "<h1>bad</h1>", "content_type": "text/html"},
            Fault.status(502, b"<h1>bad</h1>", "text/html"),
        ),
        ({"kind": "reset"}, Fault.reset()),
        ({"kind": "refuse"}, Fault.refuse()),
        ({"kind": "truncated"}, Fault.truncated()),
        ({"kind": "malformed", "body": "{}"}, Fault.malformed(b"{}")),
    ],
)
def test_faults_parse_from_json(spec: dict[str, Any], expected: Fault) -> None:
    assert Fault.from_json(spec) == expected


@pytest.mark.parametrize(
    "spec",
    [
        {},
        {"kind": "explode"},
        {"kind": "latency"},
        {"kind": "latency", "seconds": -1},
        {"kind": "status"},
        {"kind": "status", "code": 42},
        {"kind": "malformed"},
        {"kind": "status", "code": 500, "body": 5},
    ],
)
def test_bad_fault_specs_are_refused(spec: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Fault.from_json(spec)


@pytest.mark.parametrize(("path", "times"), [("api/auth/token", 1), (TOKEN_PATH, 0)])
def test_inject_refuses_bad_paths_and_counts(sandbox: Sandbox, path: str, times: int) -> None:
    with pytest.raises(ValueError):
        sandbox.inject(Fault.reset(), path=path, times=times)
    assert sandbox.pending_faults() == 0


def test_fault_kinds_are_all_constructible() -> None:
    made = {
        Fault.latency(1).kind,
        Fault.status(500).kind,
        Fault.reset().kind,
        Fault.refuse().kind,
        Fault.truncated().kind,
        Fault.malformed(b"x").kind,
        Fault.processed_then(503).kind,
    }
    assert made == set(FaultKind)


def test_a_status_fault_carries_headers_and_processed_then_processes_the_call(
    sandbox: Sandbox,
) -> None:
    sandbox.inject(Fault.status(429, headers={"Retry-After": "2"}))
    limited = token_request(sandbox)
    assert limited.status == 429 and limited.header("retry-after") == "2"
    sandbox.inject(Fault.processed_then(503))
    failed = token_request(sandbox)
    assert failed.status == 503
    assert sandbox.stats()["tokens_issued"] == 1  # processed, then answered 503
    assert Fault.from_json(
        {"kind": "processed_then_status", "code": 502, "headers": {"X-A": "1"}}
    ) == Fault.processed_then(502, headers={"X-A": "1"})
    with pytest.raises(ValueError):
        Fault.status(429, headers={"X": "a\r\nb"})


# --------------------------------------------------------------------------- counters, secrets


def test_stats_count_each_kind_of_outcome(sandbox: Sandbox, clock: FakeClock) -> None:
    assert sandbox.stats() == dict.fromkeys(STAT_NAMES, 0)
    token, sid = issue(sandbox, clock())
    token_request(sandbox, clock(), api_key="sk_test_nobody_000000")
    token_request(
        sandbox, clock(), api_key=KYC_PENDING_API_KEY, merchant_id=KYC_PENDING_MERCHANT_ID
    )
    charge(sandbox, token, sid, VALID_CHARGE, clock())
    charge(sandbox, token, sid, {**VALID_CHARGE, "amount": -1}, clock())
    sandbox.inject(Fault.status(500))
    token_request(sandbox, clock())
    clock.advance(120)
    api_call(sandbox, balance_path(), token, sid, clock())
    for _ in range(11):
        token_request(sandbox, clock())
    assert sandbox.stats() == {
        "token_requests": 15,
        "tokens_issued": 11,
        "api_requests": 3,
        "rate_limited": 1,
        "unauthorized": 2,
        "forbidden": 1,
        "expired_token_rejections": 1,
        "invalid_requests": 1,
        "charges": 1,
        "faults_injected": 1,
    }


def test_reset_stats_zeroes_every_counter(sandbox: Sandbox) -> None:
    issue(sandbox)
    assert sandbox.stats()["tokens_issued"] == 1
    sandbox.reset_stats()
    assert sandbox.stats() == dict.fromkeys(STAT_NAMES, 0)


def test_stats_is_a_snapshot_not_a_live_view(sandbox: Sandbox) -> None:
    snapshot = sandbox.stats()
    issue(sandbox)
    assert snapshot["tokens_issued"] == 0


def test_no_repr_shows_a_token_or_an_api_key(sandbox: Sandbox, clock: FakeClock) -> None:
    token, sid = issue(sandbox, clock())
    sandbox.inject(Fault.malformed(token.encode()))
    reply = sandbox.handle(token_http_request(), clock())
    texts = [
        repr(sandbox),
        str(sandbox),
        repr(sandbox.accounts),
        repr(reply),
        repr(Fault.malformed(token.encode())),
        repr(token_http_request()),
        repr(SandboxTransport(sandbox, clock)),
        repr(clock),
    ]
    secrets = [token, *token.split("."), sid, *(a.api_key for a in sandbox.accounts)]
    for text in texts:
        for secret in secrets:
            assert secret not in text, text
    assert "sk_test_…7b1d" in repr(sandbox.accounts)
