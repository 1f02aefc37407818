"""Tokens, their lifetimes and freshness, and turning a token response into a token."""

from __future__ import annotations

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
from .http import Headers, HttpResponse
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
        """The headers every API call carries."""
        return (
            ("Authorization", f"Bearer {self.access_token}"),
            ("x-session-id", self.session_id),
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Token) and other.access_token == self.access_token

    def __hash__(self) -> int:
        return hash(self.access_token)

    def __repr__(self) -> str:
        return f"Token(fingerprint={self.fingerprint}, merchant={self.merchant_id})"

    __str__ = __repr__


def parse_retry_after(response: HttpResponse, envelope: ErrorEnvelope | None) -> float | None:
    """Seconds to wait from a 429: the ``Retry-After`` header (delay-seconds form) or the body.

    The HTTP-date form would need the wall clock; it is left to the body's ``retry_after``
    or to the backoff schedule.
    """
    candidates: list[float] = []
    value = response.header("Retry-After")
    if value is not None:
        try:
            seconds = float(value.strip())
        except ValueError:
            seconds = -1.0
        if 0 <= seconds < 86400 * 2:
            candidates.append(seconds)
    if envelope is not None and envelope.retry_after is not None and envelope.retry_after >= 0:
        candidates.append(min(envelope.retry_after, 86400 * 2))
    return max(candidates) if candidates else None


def _error_envelope(response: HttpResponse) -> ErrorEnvelope | None:
    try:
        return structure(parse_json(response.body, status=response.status), ErrorEnvelope)
    except MalformedResponse:
        return None


def interpret_token_response(
    response: HttpResponse, *, sent_at: float, credentials: Credentials, policy: Policy
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
        if data.expires_in <= 0:
            raise MalformedResponse(
                f"expires_in is {data.expires_in:g}, not positive", status=status
            )
        claims = read_jwt_claims(data.access_token)
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
    raise token_error(response)


def token_error(response: HttpResponse) -> EightyEightPayError:
    """The typed error for a non-200 answer from the token endpoint."""
    status = response.status
    envelope = _error_envelope(response)
    message = envelope.message if envelope is not None else ""
    if status == 401:
        return InvalidCredentials(message or "Invalid API key or merchant ID")
    if status == 403:
        return AccessDenied(message or "Access denied")
    if status == 429:
        retry_after = parse_retry_after(response, envelope)
        return RateLimited(
            retry_after if retry_after is not None else 0.0,
            local=False,
            server_message=message,
        )
    if status >= 500:
        return ServerError(status, message[:200])
    return MalformedResponse(f"unexpected status {status} from the token endpoint", status=status)
