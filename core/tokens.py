"""Tokens, their lifetimes and freshness, and turning a token response into a token."""

from __future__ import annotations

import datetime
from enum import Enum

import attrs

from .credentials import Credentials, fingerprint
from .errors import (
    AccessDenied,
    EightyEightPayError,
    InvalidCredentials,
    MalformedResponse,
    RateLimited,
    ServerError,
)
from .http import Headers, HttpResponse, header_safe
from .policy import Policy
from .wire import ErrorEnvelope, TokenEnvelope, parse_json, read_jwt_claims, structure

__all__ = ["Freshness", "Token", "interpret_token_response", "parse_retry_after"]


class Freshness(Enum):
    """How usable a token is at a given moment."""

    FRESH = "fresh"
    """Serve it."""
    STALE = "stale"
    """Serve it, and start one background refresh."""
    EXPIRED = "expired"
    """Never hand it out: it is inside the mandatory margin or past its expiry."""


@attrs.frozen(repr=False, eq=False)
class Token:
    """An access token with its session and its life on the local monotonic clock.

    ``fresh_until`` and ``usable_until`` are precomputed so the cached path compares one
    number. The token never appears in repr or str; :attr:`fingerprint` identifies it.
    """

    access_token: str
    """The JWT (secret)."""
    session_id: str
    """The session paired with the token (secret)."""
    sent_at: float
    """Monotonic time the token request was sent; the token's life counts from here."""
    expires_at: float
    """Monotonic time the token expires: ``sent_at + min(expires_in, exp - iat)``."""
    fresh_until: float
    """Until this monotonic time the token is FRESH."""
    usable_until: float
    """Until this monotonic time the token may be handed out (expiry minus the margin)."""
    merchant_id: str
    """The merchant in the token's claims."""
    _auth: Headers = attrs.field(
        init=False,
        repr=False,
        default=attrs.Factory(
            lambda token: (
                ("Authorization", f"Bearer {token.access_token}"),
                ("x-session-id", token.session_id),
            ),
            takes_self=True,
        ),
    )
    # Built once per token: each call then sends the same strings, whose hashes are kept.

    @classmethod
    def issue(
        cls,
        access_token: str,
        session_id: str,
        *,
        sent_at: float,
        lifetime: float,
        merchant_id: str,
        policy: Policy,
    ) -> Token:
        """Build a token of ``lifetime`` seconds whose request was sent at ``sent_at``."""
        margin, lead = policy.windows_for(lifetime)
        expires_at = sent_at + lifetime
        usable_until = expires_at - margin
        return cls(
            access_token,
            session_id,
            sent_at,
            expires_at,
            usable_until - lead,
            usable_until,
            merchant_id,
        )

    @property
    def fingerprint(self) -> str:
        """A short one-way fingerprint of the token: safe to log and compare."""
        return fingerprint(self.access_token, 10)

    def freshness(self, now: float) -> Freshness:
        """FRESH, STALE or EXPIRED at monotonic time ``now``."""
        if now < self.fresh_until:
            return Freshness.FRESH
        if now < self.usable_until:
            return Freshness.STALE
        return Freshness.EXPIRED

    def remaining(self, now: float) -> float:
        """Seconds until the token expires (may be negative)."""
        return self.expires_at - now

    def auth_headers(self) -> Headers:
        """The headers every API call carries (88Pay API reference, authentication).

        ``Authorization: Bearer <token>`` and ``x-session-id``, built once per token.
        """
        return self._auth

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Token) and other.access_token == self.access_token

    def __hash__(self) -> int:
        return hash(self.access_token)

    def __repr__(self) -> str:
        return f"Token(fingerprint={self.fingerprint}, merchant={self.merchant_id})"

    __str__ = __repr__


def parse_retry_after(
    response: HttpResponse, envelope: ErrorEnvelope | None, wall_now: float | None = None
) -> float | None:
    """Seconds to wait from a 429: the ``Retry-After`` header or the body's ``retry_after``.

    The header may be delay-seconds or an HTTP-date; a date is read against ``wall_now``
    (epoch seconds, passed in by the driver) and ignored without it. The longest wins, cut
    to ``LONGEST_WAIT``; a header of ``GARBAGE_RETRY_AFTER`` or more is ignored.
    """
    candidates: list[float] = []
    value = response.header("Retry-After")
    if value is not None:
        seconds = _retry_after_seconds(value.strip(), wall_now)
        if seconds is not None and 0 <= seconds < GARBAGE_RETRY_AFTER:
            candidates.append(seconds)
    if envelope is not None and envelope.retry_after is not None and envelope.retry_after >= 0:
        candidates.append(envelope.retry_after)
    return min(max(candidates), LONGEST_WAIT) if candidates else None


LONGEST_WAIT = 3600.0
"""Seconds: the longest a 429 is waited out. No limit 88Pay documents counts over more than
an hour (token requests 10 a minute and 100 an hour, API calls 60 a minute and 1,000 an
hour), so a longer wait is never needed, and a proxy's ``Retry-After: 86400`` would
otherwise stop a merchant's payments for a day."""
GARBAGE_RETRY_AFTER = 86400.0 * 2
"""A ``Retry-After`` header of this many seconds or more is treated as garbage (ignored)."""


def _retry_after_seconds(value: str, wall_now: float | None) -> float | None:
    try:
        return float(value)
    except ValueError:
        pass
    when = _http_date(value)
    if wall_now is None or when is None:
        return None
    return max(0.0, when - wall_now)


def _http_date(value: str) -> float | None:
    """Epoch seconds of an HTTP-date, or None.

    Any of the three forms HTTP accepts (RFC 9110, section 5.6.7): IMF-fixdate
    ``Sun, 06 Nov 1994 08:49:37 GMT``, RFC 850 ``Sunday, 06-Nov-94 08:49:37 GMT`` and asctime
    ``Sun Nov  6 08:49:37 1994`` (read as GMT).
    """
    # Imported here, for a 429 with a date: ``from eightyeightpay import TokenManager`` does
    # not import email.utils, socket or calendar, and need not for this.
    from email.utils import parsedate_to_datetime

    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if moment.tzinfo is None:  # asctime names no zone: HTTP dates are GMT
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()


def error_envelope(response: HttpResponse) -> ErrorEnvelope | None:
    try:
        return structure(parse_json(response.body, status=response.status), ErrorEnvelope)
    except MalformedResponse:
        return None


def interpret_token_response(
    response: HttpResponse,
    *,
    sent_at: float,
    credentials: Credentials,
    policy: Policy,
    wall_now: float | None = None,
) -> Token:
    """Turn the token endpoint's answer into a :class:`Token`, or raise the typed error."""
    status = response.status
    if status == 200:
        envelope = structure(parse_json(response.body, status=status), TokenEnvelope, status=status)
        data = envelope.data
        if envelope.status != "Success":
            raise MalformedResponse(f"status is {envelope.status!r}, not 'Success'", status=status)
        if not data.access_token or not data.session_id:
            raise MalformedResponse("access_token or session_id is empty", status=status)
        if not (header_safe(data.access_token) and header_safe(data.session_id)):
            # Both go out as header values on every call: refused now, not at each send.
            raise MalformedResponse(
                "access_token or session_id holds a character an HTTP header cannot carry "
                "(a space, a control character or one outside printable ASCII)",
                status=status,
            )
        if data.expires_in <= 0:
            raise MalformedResponse(
                f"expires_in is {data.expires_in:g}, not positive", status=status
            )
        try:
            claims = read_jwt_claims(data.access_token)
        except MalformedResponse as error:
            raise MalformedResponse(error.detail, status=status) from None
        if claims.merchant_id != credentials.merchant_id:
            raise MalformedResponse(
                "the token was issued for a different merchant than the one configured",
                status=status,
            )
        lifetime = min(data.expires_in, claims.exp - claims.iat)
        return Token.issue(
            data.access_token,
            data.session_id,
            sent_at=sent_at,
            lifetime=lifetime,
            merchant_id=claims.merchant_id,
            policy=policy,
        )
    raise token_error(response, wall_now)


def token_error(response: HttpResponse, wall_now: float | None = None) -> EightyEightPayError:
    """The typed error for a non-200 answer from the token endpoint."""
    status = response.status
    envelope = error_envelope(response)
    message = envelope.message if envelope is not None else ""
    if status == 401:
        return InvalidCredentials(message or "Invalid API key or merchant ID")
    if status == 403:
        return AccessDenied(message or "Access denied")
    if status == 429:
        retry_after = parse_retry_after(response, envelope, wall_now)
        return RateLimited(
            retry_after if retry_after is not None else 0.0,
            local=False,
            server_message=message,
        )
    if 500 <= status <= 599:
        return ServerError(status, message[:200])
    return MalformedResponse(
        f"unexpected status {status} from the token endpoint",
        status=status,
        may_have_been_processed=not 400 <= status <= 499,  # only a 4xx says "not done"
    )
