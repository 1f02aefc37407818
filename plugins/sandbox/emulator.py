"""The sandbox emulator: a stateful, faithful stand-in for the 88Pay API.

:meth:`Sandbox.handle` is a pure handler over the emulator's own state: it takes an
:class:`~eightyeightpay.http.HttpRequest` and the current time (epoch seconds) and returns a
:class:`SandboxReply` saying what the serving layer should do. It performs no I/O, never
reads a clock and never sleeps, so tests drive it with a :class:`FakeClock` and get the same
answers every time. :class:`~eightyeightpay.plugins.sandbox.transport.SandboxTransport` serves
it in-process, :class:`~eightyeightpay.plugins.sandbox.server.SandboxServer` over sockets.
"""

from __future__ import annotations

import bisect
import enum
import http
import json
import math
import re
import secrets
import threading
import uuid
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qs, urlsplit

import attrs
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from eightyeightpay.http import HttpRequest, HttpResponse

from .jwt import JWTError, generate_signing_key, sign_es256, verify_es256

__all__ = [
    "API_RATE_LIMITS",
    "BALANCE_PATH",
    "CHARGES_PATH",
    "DEFAULT_ACCOUNTS",
    "DEFAULT_API_KEY",
    "DEFAULT_MERCHANT_ID",
    "DEFAULT_TOKEN_LIFETIME",
    "IP_BLOCKED_API_KEY",
    "IP_BLOCKED_MERCHANT_ID",
    "KYC_PENDING_API_KEY",
    "KYC_PENDING_MERCHANT_ID",
    "STAT_NAMES",
    "SUSPENDED_API_KEY",
    "SUSPENDED_MERCHANT_ID",
    "TOKEN_PATH",
    "TOKEN_RATE_LIMITS",
    "Account",
    "AccountStatus",
    "ConnectionFault",
    "Fault",
    "FaultKind",
    "RateLimit",
    "Sandbox",
    "SandboxReply",
    "mask_api_key",
]

TOKEN_PATH = "/api/auth/token"  # noqa: S105 (a URL path, not a secret)
"""The token endpoint."""
CHARGES_PATH = "/api/transactions/charges"
"""The endpoint that creates a charge (a PAYIN transaction)."""
BALANCE_PATH = "/api/balance"
"""The endpoint that reports a merchant's balance (``?id={merchant_id}``)."""

DEFAULT_TOKEN_LIFETIME = 60
"""Seconds an access token lives, as 88Pay documents (``expires_in``)."""

DEFAULT_API_KEY = "sk_test_sandbox_4f3a9c2e7b1d"
"""The API key of the default, active test merchant."""
DEFAULT_MERCHANT_ID = "MCH-COL-TEST-12345"
"""The merchant id of the default, active test merchant."""
KYC_PENDING_API_KEY = "sk_test_kycpending_8b2d41f0c6a3"
"""The API key of a merchant whose KYC verification is pending (token requests get 403)."""
KYC_PENDING_MERCHANT_ID = "MCH-COL-KYCPENDING-1"
"""The merchant id of the KYC-pending merchant."""
SUSPENDED_API_KEY = "sk_test_suspended_2e9f7a13d5c8"
"""The API key of a suspended merchant (token requests get 403)."""
SUSPENDED_MERCHANT_ID = "MCH-COL-SUSPENDED-1"
"""The merchant id of the suspended merchant."""
IP_BLOCKED_API_KEY = "sk_test_ipblocked_6c1e8d4b9f27"
"""The API key of a merchant whose allow-list does not hold the caller's IP (403)."""
IP_BLOCKED_MERCHANT_ID = "MCH-COL-IPBLOCKED-1"
"""The merchant id of the IP-blocked merchant."""

STAT_NAMES = (
    "token_requests",
    "tokens_issued",
    "api_requests",
    "rate_limited",
    "unauthorized",
    "forbidden",
    "expired_token_rejections",
    "invalid_requests",
    "charges",
    "faults_injected",
)
"""The counters :meth:`Sandbox.stats` reports, in a stable order."""

_TEST_KEY_PREFIX = "sk_test_"
_ISO_CODE = re.compile(r"[A-Z]{3}")
_MAX_DESCRIPTION = 255


def mask_api_key(api_key: str) -> str:
    """Return a display form of ``api_key`` that does not reveal it: ``sk_test_…a1b2``."""
    for prefix in ("sk_test_", "sk_live_"):
        if api_key.startswith(prefix) and len(api_key) >= len(prefix) + 8:
            return f"{prefix}…{api_key[-4:]}"
    return "<api key>"


# --------------------------------------------------------------------------- accounts


class AccountStatus(enum.Enum):
    """What the emulator answers to a merchant's token requests."""

    ACTIVE = "active"
    """Tokens are issued."""
    KYC_PENDING = "kyc_pending"
    """403 ``Access denied``: the merchant's KYC verification is not finished."""
    SUSPENDED = "suspended"
    """403 ``Access denied``: the account is suspended."""
    IP_BLOCKED = "ip_blocked"
    """403 ``Access denied``: the caller's IP address is not on the allow-list."""


@attrs.frozen(repr=False)
class Account:
    """One test merchant known to the emulator. Its repr masks the API key."""

    api_key: str
    """The merchant's secret ``sk_test_`` key."""
    merchant_id: str
    """The merchant id, ``MCH-{COUNTRY}-{ID}``."""
    status: AccountStatus = AccountStatus.ACTIVE
    """Whether the merchant gets tokens (ACTIVE) or 403."""
    balance: float = 1_000_000.0
    """The available balance the balance endpoint reports."""
    currency: str = "COP"
    """The currency of :attr:`balance`."""

    def __repr__(self) -> str:
        return (
            f"Account({mask_api_key(self.api_key)}, {self.merchant_id}, status={self.status.value})"
        )


DEFAULT_ACCOUNTS: tuple[Account, ...] = (
    Account(DEFAULT_API_KEY, DEFAULT_MERCHANT_ID),
    Account(KYC_PENDING_API_KEY, KYC_PENDING_MERCHANT_ID, AccountStatus.KYC_PENDING),
    Account(SUSPENDED_API_KEY, SUSPENDED_MERCHANT_ID, AccountStatus.SUSPENDED),
    Account(IP_BLOCKED_API_KEY, IP_BLOCKED_MERCHANT_ID, AccountStatus.IP_BLOCKED),
)
"""The accounts every new :class:`Sandbox` knows unless told otherwise."""


# --------------------------------------------------------------------------- rate limits


@attrs.frozen
class RateLimit:
    """At most ``limit`` requests in any sliding window of ``window`` seconds."""

    limit: int
    """How many requests the window allows."""
    window: float
    """The window's length in seconds."""


TOKEN_RATE_LIMITS = (RateLimit(10, 60.0), RateLimit(100, 3600.0))
"""Token requests per merchant: 10 a minute and 100 an hour."""
API_RATE_LIMITS = (RateLimit(60, 60.0), RateLimit(1000, 3600.0))
"""API calls per merchant: 60 a minute and 1,000 an hour."""


def _first_live(times: list[float], window: float, now: float) -> int:
    # Index of the oldest request still inside the window: t counts while t + window > now.
    # The same expression gives the moment it stops counting, so retry_after is exact.
    return bisect.bisect_right(times, now, key=lambda t: t + window)


@attrs.frozen
class _Verdict:
    allowed: bool
    limit: int
    remaining: int
    reset_at: float
    retry_after: int = 0

    def headers(self) -> tuple[tuple[str, str], ...]:
        return (
            ("X-RateLimit-Limit", str(self.limit)),
            ("X-RateLimit-Remaining", str(self.remaining)),
            ("X-RateLimit-Reset", str(math.ceil(self.reset_at))),
        )


def _check(times: list[float], limits: tuple[RateLimit, ...], now: float) -> _Verdict:
    """Decide whether one more request fits; on success the caller records it."""
    blocked: _Verdict | None = None
    tightest: _Verdict | None = None
    for rule in limits:
        first = _first_live(times, rule.window, now)
        count = len(times) - first
        if count >= rule.limit:
            allowed_at = times[first + count - rule.limit] + rule.window
            if blocked is None or allowed_at > blocked.reset_at:
                retry = max(1, math.ceil(allowed_at - now))
                blocked = _Verdict(False, rule.limit, 0, allowed_at, retry)
            continue
        # After this request is recorded: count + 1 used; the oldest leaves first.
        oldest = times[first] if count else now
        verdict = _Verdict(True, rule.limit, rule.limit - count - 1, oldest + rule.window)
        if tightest is None or verdict.remaining < tightest.remaining:
            tightest = verdict
    if blocked is not None:
        return blocked
    assert tightest is not None
    return tightest


def _record(times: list[float], limits: tuple[RateLimit, ...], now: float) -> None:
    bisect.insort(times, now)
    longest = max(rule.window for rule in limits)
    del times[: _first_live(times, longest, now)]


# --------------------------------------------------------------------------- faults


class FaultKind(enum.Enum):
    """The kinds of trouble the emulator can be told to cause."""

    LATENCY = "latency"
    """The answer is delayed by ``seconds``."""
    STATUS = "status"
    """An error status answers instead of the API (as a failing gateway would)."""
    RESET = "reset"
    """The request is processed, then the connection is reset without an answer."""
    REFUSE = "refuse"
    """The connection is refused: nothing is processed."""
    TRUNCATED = "truncated"
    """The request is processed; the answer's headers arrive but only half its body."""
    MALFORMED = "malformed"
    """A 200 with the given body answers instead of the API."""
    PROCESSED_THEN_STATUS = "processed_then_status"
    """The request is processed (a charge is created, a token issued), then an error
    status answers instead of the result: a gateway failing on the way back."""


@attrs.frozen(repr=False)
class Fault:
    """One injected fault. Build it with the class methods, e.g. ``Fault.status(502)``."""

    kind: FaultKind
    """What goes wrong."""
    seconds: float = 0.0
    """The delay of a LATENCY fault."""
    code: int = 0
    """The HTTP status of a STATUS fault."""
    body: bytes | None = None
    """The body of a STATUS or MALFORMED fault (None: a JSON error envelope)."""
    content_type: str = "application/json"
    """The Content-Type of a STATUS or MALFORMED fault's body."""
    headers: tuple[tuple[str, str], ...] = ()
    """Extra response headers of a STATUS fault (a 429's ``Retry-After``, say)."""

    @classmethod
    def latency(cls, seconds: float) -> Fault:
        """Delay the answer by ``seconds``; the request is processed normally."""
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError("latency must be a finite, non-negative number of seconds")
        return cls(FaultKind.LATENCY, seconds=float(seconds))

    @classmethod
    def status(
        cls,
        code: int,
        body: bytes | None = None,
        content_type: str = "application/json",
        headers: Mapping[str, str] | None = None,
    ) -> Fault:
        """Answer ``code`` without processing the request.

        The body is ``body`` or an error envelope; ``headers`` are added, e.g.
        ``Fault.status(429, headers={"Retry-After": "2"})``.
        """
        if not 100 <= code <= 599:
            raise ValueError("an HTTP status is between 100 and 599")
        extra = _fault_headers(headers)
        return cls(FaultKind.STATUS, code=code, body=body, content_type=content_type, headers=extra)

    @classmethod
    def processed_then(
        cls, code: int, body: bytes | None = None, headers: Mapping[str, str] | None = None
    ) -> Fault:
        """Process the request, then answer ``code`` instead of its result.

        The charge is created (or the token issued) and an error status comes back: the
        case where sending the call again would charge twice.
        """
        if not 400 <= code <= 599:
            raise ValueError("processed_then takes an error status (400-599)")
        extra = _fault_headers(headers)
        return cls(FaultKind.PROCESSED_THEN_STATUS, code=code, body=body, headers=extra)

    @classmethod
    def reset(cls) -> Fault:
        """Process the request, then reset the connection without answering."""
        return cls(FaultKind.RESET)

    @classmethod
    def refuse(cls) -> Fault:
        """Refuse the connection; the request is not processed."""
        return cls(FaultKind.REFUSE)

    @classmethod
    def truncated(cls) -> Fault:
        """Process the request and send its answer with only half the body."""
        return cls(FaultKind.TRUNCATED)

    @classmethod
    def malformed(cls, body: bytes, content_type: str = "application/json") -> Fault:
        """Answer 200 with ``body`` (wrong-shape JSON, JWT garbage…) without processing."""
        return cls(FaultKind.MALFORMED, code=200, body=body, content_type=content_type)

    @classmethod
    def from_json(cls, spec: Mapping[str, Any]) -> Fault:
        """Build a fault from its JSON form, e.g. ``{"kind": "status", "code": 500}``.

        ``body`` is text (sent as UTF-8). Raises ValueError for an unknown or bad spec.
        """
        try:
            kind = FaultKind(spec.get("kind"))
        except ValueError:
            names = ", ".join(k.value for k in FaultKind)
            raise ValueError(f"fault 'kind' must be one of: {names}") from None
        body = spec.get("body")
        if body is not None and not isinstance(body, str):
            raise ValueError("fault 'body' must be a string")
        raw = None if body is None else body.encode("utf-8")
        content_type = spec.get("content_type", "application/json")
        if not isinstance(content_type, str):
            raise ValueError("fault 'content_type' must be a string")
        if kind is FaultKind.LATENCY:
            seconds = spec.get("seconds")
            if isinstance(seconds, bool) or not isinstance(seconds, int | float):
                raise ValueError("a latency fault needs 'seconds'")
            return cls.latency(seconds)
        headers = spec.get("headers", {})
        if not isinstance(headers, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
        ):
            raise ValueError("fault 'headers' must map names to strings")
        if kind in (FaultKind.STATUS, FaultKind.PROCESSED_THEN_STATUS):
            code = spec.get("code")
            if isinstance(code, bool) or not isinstance(code, int):
                raise ValueError("a status fault needs an integer 'code'")
            if kind is FaultKind.PROCESSED_THEN_STATUS:
                return cls.processed_then(code, raw, headers)
            return cls.status(code, raw, content_type, headers)
        if kind is FaultKind.MALFORMED:
            if raw is None:
                raise ValueError("a malformed fault needs a 'body'")
            return cls.malformed(raw, content_type)
        return cls(kind)

    def __repr__(self) -> str:
        # A malformed body may hold a real-looking token: show only its size.
        detail = {
            FaultKind.LATENCY: f"{self.seconds:g}s",
            FaultKind.STATUS: str(self.code),
            FaultKind.PROCESSED_THEN_STATUS: str(self.code),
        }.get(self.kind, "")
        if self.body is not None:
            detail = f"{detail}, body={len(self.body)} bytes".lstrip(", ")
        return f"Fault.{self.kind.value}({detail})"


def _fault_headers(headers: Mapping[str, str] | None) -> tuple[tuple[str, str], ...]:
    pairs = tuple((str(k), str(v)) for k, v in (headers or {}).items())
    for name, value in pairs:
        if any(c in name + value for c in "\r\n"):
            raise ValueError(f"fault header {name!r} holds a line break")
    return pairs


class ConnectionFault(enum.Enum):
    """What the serving layer must do to the connection instead of a plain answer."""

    RESET = "reset"
    """Close the connection abruptly (RST) without sending the response."""
    REFUSE = "refuse"
    """Refuse the connection; there is no response."""
    TRUNCATE = "truncate"
    """Send the headers with the full Content-Length, then half the body, then close."""


@attrs.frozen
class SandboxReply:
    """What the serving layer should do with one request."""

    response: HttpResponse | None
    """The answer (complete even for TRUNCATE; see :attr:`body_to_send`). None for REFUSE."""
    delay: float = 0.0
    """Seconds to wait before answering (a LATENCY fault)."""
    connection_fault: ConnectionFault | None = None
    """A connection-level fault to realise, or None for a normal answer."""

    @property
    def body_to_send(self) -> bytes:
        """The bytes of the body actually delivered: half of it for TRUNCATE."""
        if self.response is None:
            return b""
        if self.connection_fault is ConnectionFault.TRUNCATE:
            return self.response.body[: len(self.response.body) // 2]
        return self.response.body


class _QueuedFault:
    """A fault waiting for ``remaining`` more requests to ``path`` (None: any path)."""

    __slots__ = ("fault", "path", "remaining")

    def __init__(self, fault: Fault, path: str | None, remaining: int) -> None:
        self.fault = fault
        self.path = path
        self.remaining = remaining


# --------------------------------------------------------------------------- responses

_Headers = tuple[tuple[str, str], ...]
_JSON = (("Content-Type", "application/json"),)


def _json(status: int, payload: Mapping[str, Any], headers: _Headers = ()) -> HttpResponse:
    body = json.dumps(payload, separators=(",", ":")).encode("utf-8")
    return HttpResponse(status, _JSON + headers, body)


def _error(status: int, message: str, headers: _Headers = ()) -> HttpResponse:
    return _json(status, {"status": "Error", "code": status, "message": message}, headers)


def _success(message: str, data: Mapping[str, Any], headers: _Headers = ()) -> HttpResponse:
    envelope = {"status": "Success", "code": 200, "message": message, "data": dict(data)}
    return _json(200, envelope, headers)


def _rate_limited(verdict: _Verdict) -> HttpResponse:
    return _json(
        429,
        {
            "status": "Error",
            "code": 429,
            "message": "Rate limit exceeded. Please try again later.",
            "retry_after": verdict.retry_after,
        },
        (("Retry-After", str(verdict.retry_after)), *verdict.headers()),
    )


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_url(value: object, schemes: tuple[str, ...]) -> bool:
    if not isinstance(value, str):
        return False
    parts = urlsplit(value)
    return parts.scheme in schemes and bool(parts.netloc)


def _charge_problem(body: Mapping[str, Any]) -> str | None:
    """Return the 422 message for the first invalid field of a charge, or None."""
    required: tuple[tuple[str, str], ...] = (
        ("flow", 'must be "PAYIN"'),
        ("method_code", "must be a non-empty string"),
        ("amount", "must be a positive number"),
        ("currency", "must be an ISO 4217 code of 3 upper-case letters"),
        ("country", "must be an ISO 3166 alpha-3 code of 3 upper-case letters"),
    )
    for name, rule in required:
        if name not in body:
            return f"Missing required field '{name}'"
        value = body[name]
        ok = {
            "flow": value == "PAYIN",
            "method_code": isinstance(value, str) and bool(value.strip()),
            "amount": _is_number(value) and math.isfinite(value) and value > 0,
            "currency": isinstance(value, str) and bool(_ISO_CODE.fullmatch(value)),
            "country": isinstance(value, str) and bool(_ISO_CODE.fullmatch(value)),
        }[name]
        if not ok:
            return f"Invalid field '{name}': {rule}"
    optional: tuple[tuple[str, str, bool], ...] = (
        (
            "description",
            f"must be a string of at most {_MAX_DESCRIPTION} characters",
            isinstance(body.get("description"), str)
            and len(body["description"]) <= _MAX_DESCRIPTION,
        ),
        ("customer_id", "must be a string", isinstance(body.get("customer_id"), str)),
        (
            "notification_url",
            "must be an https URL",
            _is_url(body.get("notification_url"), ("https",)),
        ),
        (
            "return_url",
            "must be an http or https URL",
            _is_url(body.get("return_url"), ("http", "https")),
        ),
    )
    for name, rule, ok in optional:
        if name in body and body[name] is not None and not ok:
            return f"Invalid field '{name}': {rule}"
    return None


# --------------------------------------------------------------------------- the emulator


class Sandbox:
    """A stateful emulator of the 88Pay API (the sandbox host).

    It issues real ES256 JWTs that expire after ``token_lifetime`` seconds, pairs each token
    with its session id, keeps the per-merchant rate limits in sliding windows, answers the
    401/403 cases, creates charges and reports balances, applies injected faults and counts
    what it served. All state sits behind one lock: :meth:`handle` may be called from many
    threads at once. Neither its repr nor its records ever show a token or an API key.
    """

    def __init__(
        self,
        *,
        token_lifetime: int = DEFAULT_TOKEN_LIFETIME,
        accounts: Iterable[Account] | None = None,
        signing_key: ec.EllipticCurvePrivateKey | None = None,
        token_limits: tuple[RateLimit, ...] = TOKEN_RATE_LIMITS,
        api_limits: tuple[RateLimit, ...] = API_RATE_LIMITS,
    ) -> None:
        """Build an emulator; its defaults are 88Pay's documented lifetime and limits.

        ``token_limits`` and ``api_limits`` are the token requests' and the API calls'
        limits, each a tuple of :class:`RateLimit` (a count per window of seconds). Real-time
        tests that shorten ``token_lifetime`` shorten the windows of both in proportion, so
        that a compressed hour keeps the documented ratio of tokens to limits, as
        ``Policy.compressed`` does on the library's side.
        """
        if isinstance(token_lifetime, bool) or not isinstance(token_lifetime, int):
            raise TypeError("token_lifetime is a whole number of seconds")
        if token_lifetime < 1:
            raise ValueError("token_lifetime must be at least 1 second")
        self._lock = threading.Lock()
        self._lifetime = token_lifetime
        self._token_limits = token_limits
        self._api_limits = api_limits
        self._signing_key = signing_key if signing_key is not None else generate_signing_key()
        self._public_key = self._signing_key.public_key()
        self._accounts: dict[str, Account] = {}
        self._token_times: dict[str, list[float]] = {}
        self._api_times: dict[str, list[float]] = {}
        self._faults: list[_QueuedFault] = []
        self._stats = dict.fromkeys(STAT_NAMES, 0)
        for account in DEFAULT_ACCOUNTS if accounts is None else accounts:
            self._put_account(account)

    # ------------------------------------------------------------------ configuration

    @property
    def token_lifetime(self) -> int:
        """Seconds each issued token lives; reported as ``expires_in``."""
        return self._lifetime

    @property
    def public_key(self) -> ec.EllipticCurvePublicKey:
        """The P-256 public key that verifies the tokens this sandbox issues."""
        return self._public_key

    def public_key_pem(self) -> bytes:
        """Return the public key as PEM (SubjectPublicKeyInfo), to verify tokens elsewhere."""
        return self._public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    @property
    def accounts(self) -> tuple[Account, ...]:
        """The merchants this sandbox knows."""
        with self._lock:
            return tuple(self._accounts.values())

    def add_account(
        self,
        api_key: str,
        merchant_id: str,
        status: AccountStatus = AccountStatus.ACTIVE,
        *,
        balance: float = 1_000_000.0,
        currency: str = "COP",
    ) -> Account:
        """Add (or replace, by API key) a test merchant and return its record.

        The emulator plays the sandbox host, so only ``sk_test_`` keys can be added.
        """
        account = Account(api_key, merchant_id, status, balance, currency)
        self._put_account(account)
        return account

    def _put_account(self, account: Account) -> None:
        if not account.api_key.startswith(_TEST_KEY_PREFIX):
            raise ValueError("the sandbox only knows sk_test_ keys")
        if not account.merchant_id:
            raise ValueError("a merchant id is required")
        with self._lock:
            self._accounts[account.api_key] = account

    def _account_of(self, merchant_id: str) -> Account | None:
        for account in self._accounts.values():
            if account.merchant_id == merchant_id:
                return account
        return None

    # ------------------------------------------------------------------ faults

    def inject(self, fault: Fault, *, path: str | None = TOKEN_PATH, times: int = 1) -> None:
        """Apply ``fault`` to the next ``times`` requests to ``path`` (None: any path).

        Faults apply in the order they were injected, one fault per request.
        """
        if times < 1:
            raise ValueError("times must be at least 1")
        if path is not None and not path.startswith("/"):
            raise ValueError("path must start with '/' (or be None for every path)")
        with self._lock:
            self._faults.append(_QueuedFault(fault, path, times))

    def clear_faults(self) -> None:
        """Drop every fault still waiting."""
        with self._lock:
            self._faults.clear()

    def pending_faults(self) -> int:
        """How many faulted requests are still to come."""
        with self._lock:
            return sum(queued.remaining for queued in self._faults)

    def _take_fault(self, path: str | None, kind: FaultKind | None = None) -> Fault | None:
        # Called with the lock held. path None matches any queued fault (a refused
        # connection has no path); kind restricts the search to one kind.
        for index, queued in enumerate(self._faults):
            if kind is not None and queued.fault.kind is not kind:
                continue
            if path is not None and queued.path is not None and queued.path != path:
                continue
            queued.remaining -= 1
            if queued.remaining == 0:
                del self._faults[index]
            self._stats["faults_injected"] += 1
            return queued.fault
        return None

    def take_refusal(self) -> bool:
        """Consume the first waiting REFUSE fault, whatever its path; True if there was one.

        A server calls this when it accepts a connection: a refused connection has sent no
        request yet, so it cannot be matched by path.
        """
        with self._lock:
            return self._take_fault(None, FaultKind.REFUSE) is not None

    # ------------------------------------------------------------------ counters

    def stats(self) -> dict[str, int]:
        """Return a snapshot of the counters (see :data:`STAT_NAMES`)."""
        with self._lock:
            return dict(self._stats)

    def reset_stats(self) -> None:
        """Set every counter back to zero."""
        with self._lock:
            self._stats = dict.fromkeys(STAT_NAMES, 0)

    def reset_limits(self) -> None:
        """Forget every merchant's rate-limit history."""
        with self._lock:
            self._token_times.clear()
            self._api_times.clear()

    # ------------------------------------------------------------------ the handler

    def handle(self, request: HttpRequest, now: float) -> SandboxReply:
        """Answer ``request`` received at ``now`` (epoch seconds). Pure: no I/O, no clock."""
        split = urlsplit(request.path)
        path, query = split.path, split.query
        with self._lock:
            fault = self._take_fault(path)
            kind = fault.kind if fault is not None else None
            if kind is FaultKind.REFUSE:
                return SandboxReply(None, connection_fault=ConnectionFault.REFUSE)
            self._stats["token_requests" if path == TOKEN_PATH else "api_requests"] += 1
            if fault is not None and kind in (FaultKind.STATUS, FaultKind.MALFORMED):
                return SandboxReply(self._fault_response(fault))
            response = self._route(request, path, query, now)
            if kind is FaultKind.PROCESSED_THEN_STATUS:
                assert fault is not None
                return SandboxReply(self._fault_response(fault))
        if fault is None:
            return SandboxReply(response)
        if kind is FaultKind.LATENCY:
            return SandboxReply(response, delay=fault.seconds)
        if kind is FaultKind.RESET:
            return SandboxReply(response, connection_fault=ConnectionFault.RESET)
        return SandboxReply(response, connection_fault=ConnectionFault.TRUNCATE)

    @staticmethod
    def _fault_response(fault: Fault) -> HttpResponse:
        if fault.body is None:
            try:
                phrase = http.HTTPStatus(fault.code).phrase
            except ValueError:
                phrase = "Error"
            return _error(fault.code, phrase, fault.headers)
        return HttpResponse(
            fault.code, (("Content-Type", fault.content_type), *fault.headers), fault.body
        )

    def _route(self, request: HttpRequest, path: str, query: str, now: float) -> HttpResponse:
        if path not in (TOKEN_PATH, CHARGES_PATH, BALANCE_PATH):
            return _error(404, "Not found")
        if request.method.upper() != "POST":
            return _error(405, "Method not allowed", (("Allow", "POST"),))
        if path == TOKEN_PATH:
            return self._issue_token(request, now)
        return self._api_call(request, path, query, now)

    def _unauthorized(self, message: str) -> HttpResponse:
        self._stats["unauthorized"] += 1
        return _error(401, message)

    def _forbidden(self, headers: _Headers = ()) -> HttpResponse:
        self._stats["forbidden"] += 1
        return _error(403, "Access denied", headers)

    def _limit(
        self,
        table: dict[str, list[float]],
        merchant_id: str,
        rules: tuple[RateLimit, ...],
        now: float,
    ) -> _Verdict:
        times = table.setdefault(merchant_id, [])
        verdict = _check(times, rules, now)
        if verdict.allowed:
            _record(times, rules, now)
        else:
            self._stats["rate_limited"] += 1
        return verdict

    def _issue_token(self, request: HttpRequest, now: float) -> HttpResponse:
        api_key = request.header("x-api-key")
        merchant_id = request.header("x-merchant-id")
        account = self._accounts.get(api_key) if api_key else None
        if account is None or account.merchant_id != merchant_id:
            # Not counted against any merchant's limit: nobody could then burn a merchant's
            # budget by sending its (public) merchant id with a wrong key.
            return self._unauthorized("Invalid API key or merchant ID")
        verdict = self._limit(self._token_times, account.merchant_id, self._token_limits, now)
        if not verdict.allowed:
            return _rate_limited(verdict)
        if account.status is not AccountStatus.ACTIVE:
            return self._forbidden(verdict.headers())
        session_id = f"sess_{uuid.uuid4()}"
        issued = int(now)
        claims = {
            "merchant_id": account.merchant_id,
            "iat": issued,
            "exp": issued + self._lifetime,
            "sid": session_id,
            "jti": uuid.uuid4().hex,
        }
        token = sign_es256(claims, self._signing_key)
        self._stats["tokens_issued"] += 1
        data = {"access_token": token, "expires_in": self._lifetime, "session_id": session_id}
        return _success("Token generated successfully", data, verdict.headers())

    def _api_call(self, request: HttpRequest, path: str, query: str, now: float) -> HttpResponse:
        authorization = request.header("authorization") or ""
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return self._unauthorized("Missing or invalid Authorization header")
        try:
            claims = verify_es256(token.strip(), self._public_key)
        except JWTError:
            return self._unauthorized("Invalid token")
        merchant_id = claims.get("merchant_id")
        expires = claims.get("exp")
        session_id = claims.get("sid")
        if (
            not isinstance(merchant_id, str)
            or not isinstance(session_id, str)
            or not isinstance(expires, int | float)
            or isinstance(expires, bool)
        ):
            return self._unauthorized("Invalid token")
        if expires <= now:
            self._stats["expired_token_rejections"] += 1
            return self._unauthorized("Token expired")
        if request.header("x-session-id") != session_id:
            return self._unauthorized("Invalid session")
        account = self._account_of(merchant_id)
        if account is None:
            return self._unauthorized("Invalid token")
        verdict = self._limit(self._api_times, merchant_id, self._api_limits, now)
        if not verdict.allowed:
            return _rate_limited(verdict)
        if account.status is not AccountStatus.ACTIVE:
            return self._forbidden(verdict.headers())
        if path == BALANCE_PATH:
            return self._balance(account, query, verdict)
        return self._charge(account, request.body, now, verdict)

    def _invalid(self, status: int, message: str, verdict: _Verdict) -> HttpResponse:
        self._stats["invalid_requests"] += 1
        return _error(status, message, verdict.headers())

    def _balance(self, account: Account, query: str, verdict: _Verdict) -> HttpResponse:
        ids = parse_qs(query).get("id", [])
        if not ids or not ids[0]:
            return self._invalid(422, "Missing required field 'id'", verdict)
        if ids[0] != account.merchant_id:
            return self._forbidden(verdict.headers())
        data = {
            "merchant_id": account.merchant_id,
            "available": account.balance,
            "currency": account.currency,
        }
        return _success("Balance retrieved successfully", data, verdict.headers())

    def _charge(self, account: Account, raw: bytes, now: float, verdict: _Verdict) -> HttpResponse:
        try:
            body = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError):
            return self._invalid(400, "Request body must be valid JSON", verdict)
        if not isinstance(body, dict):
            return self._invalid(400, "Request body must be a JSON object", verdict)
        problem = _charge_problem(body)
        if problem is not None:
            return self._invalid(422, problem, verdict)
        self._stats["charges"] += 1
        data = {
            "transaction_id": f"txn_{secrets.token_hex(12)}",
            "status": "PENDING",
            "merchant_id": account.merchant_id,
            "flow": "PAYIN",
            "method_code": body["method_code"],
            "amount": body["amount"],
            "currency": body["currency"],
            "country": body["country"],
            "created_at": int(now),
        }
        return _success("Charge created successfully", data, verdict.headers())

    def __repr__(self) -> str:
        with self._lock:
            accounts, pending = len(self._accounts), len(self._faults)
        return (
            f"Sandbox(accounts={accounts}, token_lifetime={self._lifetime}, "
            f"queued_faults={pending})"
        )
