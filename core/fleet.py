"""The fleet: what a shared store holds and the effects of the fleet refresh protocol.

A store (Redis, Memcached, a third party's) keeps, per cache key: the token with its
remaining time to live measured by the store, the single-flight lock, two budgets of the
fleet's send times (token requests, and API calls: 88Pay limits each per merchant), the
fleet's members and a 429 cool-down. The core asks for these through the
effect records below; the driver performs them on the store and sends back the results.
"""

from __future__ import annotations

import json
import math
from typing import Literal

import attrs

from .credentials import CacheKey
from .errors import MalformedResponse
from .governor import HOUR, MINUTE, RateWindow
from .http import header_safe
from .wire import structure

__all__ = [
    "API_BUDGET",
    "TOKEN_BUDGET",
    "AcquireLock",
    "BudgetRequest",
    "BudgetResult",
    "Done",
    "FleetBook",
    "JoinFleet",
    "KeepLock",
    "LockResult",
    "Members",
    "ReadShared",
    "ReleaseLock",
    "ReserveFleetBudget",
    "SharedRead",
    "Sleep",
    "StoreBudget",
    "StoreFault",
    "StoredToken",
    "WriteCooldown",
    "WriteShared",
    "api_calls_key",
    "decode_stored",
    "encode_stored",
]


@attrs.frozen(repr=False)
class StoredToken:
    """A token as a store keeps it. Its expiry is the store's time to live, not a timestamp."""

    access_token: str
    """The JWT (secret; encrypt it at rest where the store allows)."""
    session_id: str
    """The session paired with the token (secret)."""
    merchant_id: str
    """Whom the token is for."""
    lifetime: float
    """The token's whole life in seconds, as computed when it was issued."""

    def __repr__(self) -> str:
        return f"StoredToken(merchant={self.merchant_id}, lifetime={self.lifetime:g})"


def encode_stored(token: StoredToken) -> bytes:
    """The stored form of ``token`` (JSON; the store may encrypt it)."""
    return json.dumps(attrs.asdict(token), separators=(",", ":")).encode()


def decode_stored(raw: bytes | str | None) -> StoredToken | None:
    """Read a stored token; anything else at the key (garbage, a foreign value) is None."""
    if raw is None:
        return None
    try:
        data = json.loads(raw)
        token = structure(data, StoredToken)
    except (ValueError, UnicodeDecodeError, RecursionError, MalformedResponse):
        return None
    if not 0 < token.lifetime < 86400:
        return None
    if not (header_safe(token.access_token) and header_safe(token.session_id)):
        return None  # empty, or what no header can carry (from an older writer): not a token
    return token


# --------------------------------------------------------------------------- effects


@attrs.frozen
class ReadShared:
    """Effect: read the token with its remaining TTL and the cool-down, atomically."""

    key: CacheKey
    """Whose token."""


@attrs.frozen
class AcquireLock:
    """Effect: take the fleet's single-flight lock if free (it expires after ``ttl``)."""

    key: CacheKey
    """Whose lock."""
    owner: str
    """This flight's fencing value; only it may release the lock."""
    ttl: float
    """Seconds until the lock frees itself (a crashed holder cannot block the fleet)."""


@attrs.frozen
class KeepLock:
    """Effect: keep renewing the lock's lease while this flight's request is out.

    The driver starts renewing at once, every ``every`` seconds, through the store's
    ``extend(key, owner, ttl)`` (fenced: only ``owner``'s lock is renewed), and stops when
    it performs the flight's :class:`ReleaseLock` or the flight ends, whichever comes first.
    A holder that dies stops renewing, so its lock lapses within ``ttl`` seconds.
    """

    key: CacheKey
    """Whose lock."""
    owner: str
    """The fencing value the lock was taken with."""
    ttl: float
    """The lease each renewal sets, in seconds."""
    every: float
    """Seconds between renewals (a fraction of ``ttl``, so one late renewal is survived)."""


Purpose = Literal["token", "api"]
"""Which of the fleet's budgets: token requests or API calls (kept apart, as 88Pay limits
each on its own: 10/minute and 100/hour, 60/minute and 1,000/hour per merchant)."""
TOKEN_BUDGET: Purpose = "token"  # noqa: S105 (a name, not a secret)
"""The budget of token requests (``POST /api/auth/token``)."""
API_BUDGET: Purpose = "api"
"""The budget of API calls (``request()``)."""


def api_calls_key(key: CacheKey) -> CacheKey:
    """The key under which a store keeps the fleet's API cool-down (an API ``429``'s).

    The store keeps it as it keeps the token's cool-down (``cool_down`` writes it, ``read``
    answers its seconds left), under a key of its own: the same base URL and merchant, the
    API key's fingerprint with ``:api-calls`` appended. An API ``429`` so holds back the
    fleet's API calls, never its token requests, and the reverse: 88Pay limits each apart.
    """
    return attrs.evolve(key, key_fingerprint=f"{key.key_fingerprint}:api-calls")


@attrs.frozen
class BudgetRequest:
    """What a store's ``reserve`` is asked: one send in the ``purpose`` budget, if it fits.

    The store keeps each budget with an **epoch**: a name it gives the budget when it
    creates it, and a new one whenever it finds the budget gone (a restarted server without
    persistence, an eviction). A caller names the epoch it last saw; when that is not the
    budget's, the store records nothing and answers the current epoch, so the caller can
    first put back its own sends (``backfill``) that the budget does not hold.
    """

    purpose: Purpose
    """Which budget: ``"token"`` or ``"api"``."""
    per_minute: int
    """Sends allowed per rolling ``minute_span``."""
    per_hour: int
    """Sends allowed per rolling ``hour_span``."""
    minute_span: float = MINUTE
    """Seconds the short window spans (60; shorter for a compressed policy)."""
    hour_span: float = HOUR
    """Seconds the long window spans (3600; shorter for a compressed policy)."""
    epoch: str = ""
    """The budget's epoch as the caller last saw it (``""``: never)."""
    backfill: tuple[float, ...] = ()
    """Ages in seconds (how long ago, now) of this caller's sends the budget does not hold:
    made while the store was down, or lost with it. Recorded, when the epoch matches,
    before the limits are checked, at the store's now minus each age."""
    send: bool = True
    """False: only put the backfill back, record no new send (the wait is still answered)."""


@attrs.frozen
class StoreBudget:
    """One budget as a store keeps it, with the arithmetic of ``reserve`` (pure).

    Stores that hold a Python value per budget (memcached, a dict, a database row) keep a
    ``StoreBudget`` and call :meth:`reserve` with their own clock's time; Redis runs the
    same rules in a script.
    """

    epoch: str = ""
    """The budget's name; ``""`` for a budget not yet made (or lost)."""
    sends: RateWindow = attrs.field(factory=RateWindow)
    """Send times on the store's clock."""

    def reserve(
        self, request: BudgetRequest, now: float, new_epoch: str
    ) -> tuple[StoreBudget, float]:
        """The budget after ``request`` at ``now`` (the store's clock), and the wait.

        A budget without an epoch takes ``new_epoch`` (random, made by the store). When
        ``request.epoch`` is not the budget's, nothing is recorded (the wait is 0: the
        caller compares epochs first). Otherwise the backfill is recorded, then one send
        at ``now`` if both windows allow it and ``request.send`` (wait 0), else the seconds
        until one would be allowed.
        """
        budget = self if self.epoch else StoreBudget(new_epoch, RateWindow())
        if request.epoch != budget.epoch:
            return budget, 0.0
        hour = request.hour_span
        window = budget.sends
        for age in request.backfill:
            if 0 <= age < hour:
                window = window.record(now - age, hour)
        window = RateWindow(tuple(sorted(t for t in window.sends if t > now - hour)))
        allowed = window.next_allowed(
            now, request.per_minute, request.per_hour, request.minute_span, hour
        )
        if allowed > now or not request.send:
            return StoreBudget(budget.epoch, window), max(0.0, allowed - now)
        return StoreBudget(budget.epoch, window.record(now, hour)), 0.0

    def spent(self, now: float, minute_span: float, hour_span: float) -> tuple[int, int]:
        """Sends in the ``minute_span`` and ``hour_span`` seconds up to ``now``."""
        return self.sends.count(now, minute_span), self.sends.count(now, hour_span)


@attrs.frozen
class FleetBook:
    """What one process knows of one fleet budget: its epoch and the sends it lacks.

    ``unsynced`` are this process's own send times (its monotonic clock) that the store's
    budget does not hold: sent while the store was down, or lost with the budget when the
    store answered a new epoch. The next reservation backfills them.
    """

    epoch: str = ""
    """The budget's epoch as last answered by the store (``""``: not yet)."""
    unsynced: tuple[float, ...] = ()
    """Own sends to put back into the fleet's budget."""
    settle_until: float = -math.inf
    """After the store lost the budget: no reservation before this time (monotonic), so
    that the fleet's other processes put their sends back first."""


@attrs.frozen
class ReserveFleetBudget:
    """Effect: record one send in the fleet's budget if both limits allow it.

    The store counts with its own clock, so hosts' clocks do not matter.
    """

    key: CacheKey
    """Whose budget."""
    request: BudgetRequest
    """Which budget, its limits and windows, and the caller's epoch and backfill."""


@attrs.frozen
class WriteShared:
    """Effect: store ``token`` for ``ttl`` seconds."""

    key: CacheKey
    """Whose token."""
    token: StoredToken
    """What to store."""
    ttl: float
    """Seconds the token has left."""


@attrs.frozen
class WriteCooldown:
    """Effect: tell the fleet not to request a token for ``seconds`` (after a 429)."""

    key: CacheKey
    """Whose cool-down."""
    seconds: float
    """How long."""


@attrs.frozen
class ReleaseLock:
    """Effect: release the lock if ``owner`` still holds it (fenced)."""

    key: CacheKey
    """Whose lock."""
    owner: str
    """The fencing value given to :class:`AcquireLock`."""


@attrs.frozen
class JoinFleet:
    """Effect: register ``member`` as sharing ``key``'s budget for ``ttl`` seconds; count them.

    Each process joins on every refresh it makes through the store, so the count is of the
    processes alive within the last ``ttl`` seconds.
    """

    key: CacheKey
    """Whose fleet."""
    member: str
    """This process's name (unique per machine)."""
    ttl: float
    """Seconds the registration lasts without a renewal."""


@attrs.frozen
class Sleep:
    """Effect: wait ``seconds`` (while another process refreshes)."""

    seconds: float
    """How long."""


FleetEffect = (
    ReadShared
    | AcquireLock
    | KeepLock
    | ReserveFleetBudget
    | JoinFleet
    | WriteShared
    | WriteCooldown
    | ReleaseLock
)
"""The effects a store performs."""


# --------------------------------------------------------------------------- results


@attrs.frozen
class SharedRead:
    """Result of :class:`ReadShared`."""

    token: StoredToken | None
    """The stored token, if one is there and readable."""
    ttl: float
    """Seconds the store will keep it (its remaining life)."""
    cooldown: float
    """Seconds of the fleet's 429 cool-down left (0 when none)."""
    now: float
    """Local monotonic time the read completed."""


@attrs.frozen
class LockResult:
    """Result of :class:`AcquireLock`."""

    acquired: bool
    """True when this flight now holds the lock."""
    now: float
    """Local monotonic time."""


@attrs.frozen
class BudgetResult:
    """Result of :class:`ReserveFleetBudget`."""

    wait: float
    """0 when the send was recorded; otherwise seconds until one would be allowed."""
    now: float
    """Local monotonic time."""
    epoch: str = ""
    """The budget's epoch; when it is not the one asked with, nothing was recorded."""


@attrs.frozen
class Members:
    """Result of :class:`JoinFleet`: how many processes share the key's budget."""

    count: int
    """Live members, this process included (at least 1)."""
    now: float
    """Local monotonic time."""


@attrs.frozen
class Done:
    """Result of an effect that returns nothing (writes, release, sleep)."""

    now: float
    """Local monotonic time."""


@attrs.frozen
class StoreFault:
    """Result of any store effect that failed: the store is down, slow or answered garbage."""

    detail: str
    """What went wrong, without secrets."""
    now: float
    """Local monotonic time."""
    stalled: bool = False
    """True when waiting a moment will not cure it: the call did not answer within its
    deadline (rather than failing fast), or failed in a way a failover does not explain (a
    TLS failure). The machine then works alone at once, without the failover grace."""
    misconfigured: bool = False
    """True when the store refused this process's configuration (a wrong password, a
    database that does not exist, a missing TLS file): no failover or restart cures it,
    so the core does not wait for the store to come back before working alone."""


# --------------------------------------------------------------------------- performing


def store_call(effect: FleetEffect) -> tuple[str, tuple[object, ...]]:
    """The store method and arguments that perform ``effect``.

    The methods are those of :class:`~eightyeightpay.plugins.fleet.FleetStore`.
    """
    match effect:
        case ReadShared(key):
            return "read", (key,)
        case AcquireLock(key, owner, ttl):
            return "acquire", (key, owner, ttl)
        case KeepLock(key, owner, ttl):
            return "extend", (key, owner, ttl)
        case ReserveFleetBudget(key, request):
            return "reserve", (key, request)
        case JoinFleet(key, member, ttl):
            return "join", (key, member, ttl)
        case WriteShared(key, token, ttl):
            return "write", (key, token, ttl)
        case WriteCooldown(key, seconds):
            return "cool_down", (key, seconds)
        case ReleaseLock(key, owner):
            return "release", (key, owner)
    raise TypeError(f"not a store effect: {effect!r}")


def store_result(
    effect: FleetEffect, value: object, now: float
) -> SharedRead | LockResult | BudgetResult | Members | Done | StoreFault:
    """The result record for what the store method returned; a malformed value is a fault."""
    if isinstance(effect, ReadShared):
        if not (isinstance(value, tuple) and len(value) == 3):
            return StoreFault("the store's read returned an unexpected value", now)
        raw, ttl, cooldown = value
        if not isinstance(raw, bytes | str | StoredToken | None):
            return StoreFault("the store's read returned an unexpected value", now)
        if not isinstance(ttl, int | float) or not isinstance(cooldown, int | float):
            return StoreFault("the store's read returned an unexpected value", now)
        token = raw if isinstance(raw, StoredToken) else decode_stored(raw)
        return SharedRead(token, max(0.0, float(ttl)), max(0.0, float(cooldown)), now)
    if isinstance(effect, AcquireLock):
        return LockResult(bool(value), now)
    if isinstance(effect, JoinFleet):
        if isinstance(value, bool) or not isinstance(value, int):
            return StoreFault("the store's join returned an unexpected value", now)
        return Members(max(1, value), now)
    if isinstance(effect, ReserveFleetBudget):
        if not (isinstance(value, tuple) and len(value) == 2):
            return StoreFault("the store's budget returned an unexpected value", now)
        wait, epoch = value
        if (
            isinstance(wait, bool)
            or not isinstance(wait, int | float)
            or not isinstance(epoch, str)
            or math.isnan(wait)
        ):
            return StoreFault("the store's budget returned an unexpected value", now)
        return BudgetResult(max(0.0, float(wait)), now, epoch)
    return Done(now)
