"""The token machine: every decision about one credentials' token, as pure data.

A driver holds one :class:`TokenMachine` per cache key and touches it only under its own
lock. It asks :meth:`TokenMachine.decide_and_start` what a caller should do at ``now`` and
gets back a :class:`Decision`; when the decision starts a refresh, the driver runs the
refresh protocol (:meth:`TokenMachine.refresh`), performing the effects it yields and
sending their results back. The machine never reads a clock, sleeps, draws randomness of
its own or does I/O.
"""

from __future__ import annotations

import math
from collections.abc import Generator

import attrs

from .credentials import CacheKey, Credentials
from .errors import (
    AccessDenied,
    DeadlineExceeded,
    EightyEightPayError,
    InvalidCredentials,
    MalformedResponse,
    RateLimited,
    RequestTimeout,
    RetryableError,
    TransportError,
    is_transient,
)
from .fleet import (
    API_BUDGET,
    TOKEN_BUDGET,
    AcquireLock,
    BudgetRequest,
    BudgetResult,
    Done,
    FleetBook,
    FleetEffect,
    JoinFleet,
    KeepLock,
    LockResult,
    Members,
    Purpose,
    ReadShared,
    ReleaseLock,
    ReserveFleetBudget,
    SharedRead,
    Sleep,
    StoredToken,
    StoreFault,
    WriteCooldown,
    WriteShared,
    api_calls_key,
)
from .governor import RateWindow
from .http import HttpRequest, HttpResponse
from .policy import Deadline, Policy, Rng, backoff_delay
from .stats import OUTCOMES, Stats, Tally
from .tokens import Token, interpret_token_response

__all__ = [
    "Decision",
    "Exchange",
    "Flight",
    "Notice",
    "Pause",
    "Refresh",
    "SendTokenRequest",
    "Serve",
    "Settled",
    "TokenMachine",
    "Unavailable",
    "Wait",
]

WAIT_GRACE = 1.0
"""Seconds a waiter allows beyond the request timeout before giving up on a flight."""


@attrs.frozen
class Flight:
    """One token request, from the decision that started it until it settles."""

    number: int
    """Sequence number within the machine."""
    started_at: float
    """Monotonic time the refresh was decided; its lifetime is counted from here."""
    background: bool
    """True when a usable token is being served meanwhile (refresh-ahead)."""
    ends_by: float = math.inf
    """Monotonic time by which the flight has ended (``started_at`` plus
    :attr:`TokenMachine.flight_limit`): its waiters never wait longer."""


# --------------------------------------------------------------------------- decisions


@attrs.frozen
class Serve:
    """Hand out ``token``; nothing else to do."""

    token: Token
    """A token that is usable now."""


@attrs.frozen
class ServeAndRefresh:
    """Hand out ``token`` and start ``flight`` in the background."""

    token: Token
    """A usable but stale token."""
    flight: Flight
    """The refresh this caller must start, without waiting for it."""


@attrs.frozen
class Refresh:
    """No usable token: the caller starts ``flight`` and waits for it, at most until ``until``.

    The flight is shared: the caller's deadline bounds its wait, never the flight's own
    request. When :attr:`in_caller` is False the flight may outlast the caller's wait, so a
    driver that would run it on the caller's own thread runs it apart instead.
    """

    flight: Flight
    """The refresh this caller must run."""
    until: float = math.inf
    """Monotonic time the caller stops waiting: the flight's end, or its deadline if earlier."""

    @property
    def in_caller(self) -> bool:
        """True when the flight cannot outlast the caller's wait (it may run on its thread).

        The flight's own bound is its end less :data:`WAIT_GRACE` (the waiters' allowance
        for scheduling): a local flight is one token request, over within its timeout.
        """
        return self.until >= self.flight.ends_by - WAIT_GRACE


@attrs.frozen
class Wait:
    """A refresh is in flight: wait for it, at most until ``until``, then decide again."""

    flight: Flight
    """The request being waited for."""
    until: float
    """Monotonic deadline: the flight's end, or the caller's deadline if earlier."""

    @property
    def in_caller(self) -> bool:
        """True when the flight cannot outlast the caller's wait (it may run on its thread).

        The flight's own bound is its end less :data:`WAIT_GRACE` (the waiters' allowance
        for scheduling): a local flight is one token request, over within its timeout.
        """
        return self.until >= self.flight.ends_by - WAIT_GRACE


@attrs.frozen
class Unavailable:
    """No token in time: fail with ``error``.

    The next request is allowed only at ``retry_at``, which the caller's deadline does not
    reach, or the failure is definite (401, 403).
    """

    error: EightyEightPayError
    """What to raise if the caller will not wait."""
    retry_at: float
    """Monotonic time a token request may next be sent."""


@attrs.frozen
class Pause:
    """No token before ``until``, which the caller's deadline allows: sleep, then decide again.

    Given for a transient failure's backoff, a ``429``'s cool-down that fits, or the rate
    limit; never for a definite failure (401, 403, bad credentials), which fails at once.
    """

    until: float
    """Monotonic time at which a token request may next be sent."""


Decision = Serve | ServeAndRefresh | Refresh | Wait | Pause | Unavailable
"""What a caller of ``get_token()`` should do."""


@attrs.frozen
class Notice:
    """Something an operator should see, for the driver to log (the core does not log).

    A failing background refresh is one WARNING per failure streak, with the time the
    current token has left; the token running out during the streak is one ERROR; the first
    success after either is one INFO. A refresh held back for this process's share of the
    limits while the fleet store is down is not a failure: one WARNING per streak (the time
    left, when the share allows a request), an ERROR only once a caller fails for want of a
    token, and one INFO when a refresh goes through. Messages hold no secret: merchant id,
    error class, counts, seconds.
    """

    level: str
    """``"warning"``, ``"error"`` or ``"info"``."""
    message: str
    """The text to log."""


# --------------------------------------------------------------------------- effects


@attrs.frozen
class SendTokenRequest:
    """Effect: send ``request`` with ``timeout`` and return an :class:`Exchange`."""

    request: HttpRequest
    """The token request."""
    timeout: float
    """Seconds the whole exchange may take."""


@attrs.frozen
class Exchange:
    """Result of :class:`SendTokenRequest`: a response or a transport error, and the time."""

    response: HttpResponse | None
    """The complete response, if one arrived."""
    error: EightyEightPayError | None
    """What went wrong on the way, if no response arrived."""
    now: float
    """Monotonic time the exchange ended."""
    wall: float | None = None
    """Wall-clock time it ended (epoch seconds), to read a ``Retry-After`` given as a date."""


@attrs.frozen
class Settled:
    """How a flight ended: a token, or the error every waiter receives."""

    flight: Flight
    """The flight that ended."""
    token: Token | None
    """The new token, on success."""
    error: EightyEightPayError | None
    """The failure, otherwise."""


Effect = SendTokenRequest | FleetEffect | Sleep
"""The effects the refresh protocol may yield."""
Result = Exchange | SharedRead | LockResult | BudgetResult | Members | Done | StoreFault
"""What the driver sends back for an effect."""

_UNLIMITED = 2**62
"""A count no window reaches: an API limit the policy does not keep (None)."""
Limits = tuple[int, int, float, float]
"""A budget's limits: per short window, per long window, and the windows' spans (seconds)."""

LOCK_LEASE = 3.0
"""Seconds a fleet lock lives unless its holder renews it: a holder that dies (killed,
frozen, cut off) stops renewing, and the fleet takes over within this many seconds."""
LEASE_RENEWALS = 3
"""Renewals per lease while the holder's request is out (every ``LOCK_LEASE / 3`` s), so
that one late renewal does not lose the lock."""
FAILOVER_GRACE = 3.0
"""Seconds a flight keeps trying a store that fails fast (refused connections, a demoted
master) before working alone, when the store was healthy until then: a failover or a quick
restart is ridden out without every process sending its own request. A store that stalls,
or one already known to be down, is not waited for."""
FLEET_STORE_CALLS = 9
"""Store calls a fleet flight makes besides the wait for the lock (read, acquire, read, and
up to six reservations: after working alone, one that learns a new budget epoch and one
that puts own sends back; then one of each before the send and after the settle), each
bounded by the store's deadline."""
EPOCH_TRIES = 2
"""Reservations a send tries when the store answers a budget epoch other than the one
asked with: the first learns the new epoch, the second puts this process's own sends back
and reserves. A store whose epoch changes again in between is treated as failing."""
BUDGET_SETTLE = 1.0
"""Seconds a process waits, after putting its own sends back into the fleet's budget (the
store lost it, or they were made while the store was down), before it reserves there: the
fleet's other active processes put theirs back meanwhile, so the budget is whole again
before it decides for anyone. A process that sends nothing in that time puts its sends
back only at its next send."""
STORE_PROBE_INTERVAL = 1.0
"""Seconds between the API calls that try the fleet store again while it is failing; the
calls between keep to this process's share of the limits without waiting on the store."""


# --------------------------------------------------------------------------- the machine

MEMBERSHIP_LIFETIMES = 3
"""A process's fleet membership lasts this many token lifetimes without a renewal (each
refresh through the store renews it, about once per lifetime)."""


class TokenMachine:
    """All state and decisions for the token of one set of credentials."""

    def __init__(
        self,
        credentials: Credentials,
        policy: Policy,
        rng: Rng,
        *,
        fleet: bool = False,
        instance: str = "local",
        store_deadline: float = 0.0,
    ) -> None:
        self.credentials = credentials
        """Whose token this machine manages."""
        self.policy = policy
        """Windows, limits and backoff."""
        self.rng = rng
        """Randomness for backoff jitter, passed in by the driver."""
        self.token: Token | None = None
        """The newest token, usable or not."""
        self.flight: Flight | None = None
        """The token request in flight, if any (never more than one)."""
        self.window = RateWindow()
        """Sends of the last hour, for 88Pay's 10/minute and 100/hour limits."""
        self.blocked_until = -math.inf
        """No request before this time (429 cool-down or failure backoff)."""
        self.failures = 0
        """Consecutive failed token requests."""
        self.last_error: EightyEightPayError | None = None
        """The error of the last failed request, served during its cool-down."""
        self.sent = 0
        """Token requests sent over the machine's life."""
        self.fleet = fleet
        """True when a shared store coordinates this key across processes."""
        self.instance = instance
        """This process's name in fencing values (unique per machine)."""
        self.degraded = False
        """True while the shared store is failing and the machine works alone."""
        self.degraded_since: float | None = None
        """When the store started failing, while :attr:`degraded`."""
        self.members = policy.assumed_fleet_size
        """Processes sharing this key's budget, as the store last counted them; until it has
        counted them once, :attr:`~eightyeightpay.policy.Policy.assumed_fleet_size` (a
        process that never reached its store does not know its fleet's size, and must not
        take itself to be alone).

        In degraded mode this process keeps to ``1/members`` of each rate limit. For a token
        lifetime after the store comes back the count does not fall: the store may have lost
        its members, and the fleet rejoins over that lifetime."""
        self._recount_at = -math.inf  # until then, a lower count from the store is not taken
        self._spread_for: float | None = None  # expires_at of the token whose refresh was spread
        self._spread_until = -math.inf
        self.tally = Tally()
        """What :meth:`stats` counts (sends, outcomes, waiting callers, rejected tokens)."""
        self.store_deadline = store_deadline
        """Seconds one store call may take before the driver counts it as a fault."""
        self.api_window = RateWindow()
        """API calls of the last hour, for 88Pay's 60/minute and 1,000/hour API limits (the
        windows span the policy's ``minute_span`` and ``hour_span``, as the token limits')."""
        self.api_blocked_until = -math.inf
        """No API call before this time (an API 429's cool-down)."""
        self._api_429_at = -math.inf  # the last API 429's cool-down start: streaks of them
        self.api_reserved_at = -math.inf
        """When the last send :attr:`api_window` counted was counted (an
        :class:`~eightyeightpay.api.ApiPermit`'s time)."""
        # A policy without API limits keeps only a 429's cool-down.
        self._api_kept = policy.api_per_minute is not None or policy.api_per_hour is not None
        self._api_limits: Limits = (
            policy.api_per_minute or _UNLIMITED,
            policy.api_per_hour or _UNLIMITED,
            policy.minute_span,
            policy.hour_span,
        )
        self.books: dict[Purpose, FleetBook] = {TOKEN_BUDGET: FleetBook(), API_BUDGET: FleetBook()}
        """Per fleet budget: the store's epoch as last seen and own sends it lacks."""
        self.api_alone = False
        """True while API calls keep to this process's share (the store failed their last
        reservation). Kept apart from :attr:`degraded`, so that a slow store call on the API
        path never makes a token refresh skip the failover grace and send its own request."""
        self._probe_at = -math.inf  # working alone: when an API call next tries the store
        self.notices: list[Notice] = []
        """What the driver should log, taken with :meth:`take_notices`."""
        # "" (no trouble), "warned" (a refresh failed), "ran out" (then the token expired),
        # "held" (a refresh was held back for this process's share) or "held failing" (then
        # a caller failed for want of a token).
        self._trouble = ""
        self._numbers = 0
        self._awaiting = False  # a send whose exchange has not come back
        self._send_time: float | None = None
        self._rejected: tuple[str, ...] = ()

    # ---------------------------------------------------------------- deciding

    def decide_and_start(self, now: float, until: Deadline | None = None) -> Decision:
        """What a caller asking for a token at ``now`` does, committed: not a pure query.

        ``until`` is the caller's deadline (None: fail fast at ``now``). When no token can be
        had before a time the deadline allows, and the reason is transient or the rate
        limit, the answer is :class:`Pause`; otherwise :class:`Unavailable`. A caller with
        less than :data:`~eightyeightpay.policy.MIN_ATTEMPT` left starts no token request
        (:class:`Unavailable` with a :class:`~eightyeightpay.errors.DeadlineExceeded`); a
        caller's wait for a flight ends at its deadline (:class:`Wait`, :class:`Refresh`).

        A :class:`Refresh` or :class:`ServeAndRefresh` answer has already started its flight
        (the machine records it, and the next call answers :class:`Wait` or :class:`Serve`).
        The caller that got it must run it with :meth:`refresh` and finish it, or end it with
        :meth:`abort` if it will never run; otherwise every later caller waits for a flight
        nobody runs. :class:`Serve`, :class:`Wait` and :class:`Unavailable` change nothing.
        """
        token = self.token
        if token is not None and now < token.usable_until:
            if now < token.fresh_until or self.flight is not None:
                return Serve(token)
            if self.degraded and now < self._spread_until:
                return Serve(token)  # this process's own time to refresh has not come
            if self._send_allowed_at(now) > now:
                return Serve(token)
            return ServeAndRefresh(token, self._start(now, background=True))
        if token is not None and self._trouble == "warned":
            self._ran_out(token)
        deadline = until if until is not None else Deadline(now, fail_fast=True)
        if self.flight is not None:
            self.tally = self.tally.caller_waited()
            return Wait(self.flight, deadline.wait_until(self.flight.ends_by))
        retry_at = self._send_allowed_at(now)
        if retry_at > now:
            definite = now < self.blocked_until and not is_transient(self.last_error)
            if deadline.fits(retry_at) and not definite:
                return Pause(retry_at)
            self._callers_fail(now, retry_at)
            return Unavailable(self._unavailable_error(now, retry_at), retry_at)
        if not deadline.may_start(now):
            self._callers_fail(now, now)
            return Unavailable(Deadline.too_late("a token request could start", sent=False), now)
        self.tally = self.tally.caller_waited()
        flight = self._start(now, background=False)
        return Refresh(flight, deadline.wait_until(flight.ends_by))

    def gave_up(self, waited: Refresh | Wait) -> EightyEightPayError:
        """The error of a caller whose wait (``waited.until``) ended without the flight's outcome.

        :class:`~eightyeightpay.errors.DeadlineExceeded` when the caller's deadline ended the
        wait before the flight's end (``retry_after``: the longest the flight may still take),
        else :class:`~eightyeightpay.errors.RequestTimeout`. A new error on every call.
        """
        flight, wait_until = waited.flight, waited.until
        if wait_until < flight.ends_by:
            return DeadlineExceeded(
                "while the token request it waited for was still out (the request goes on "
                "for its other callers, and its token will be cached)",
                retry_after=flight.ends_by - wait_until,
                may_have_been_sent=True,
            )
        return RequestTimeout(
            self.credentials.host, self.policy.request_timeout, may_have_been_sent=True
        )

    @property
    def flight_limit(self) -> float:
        """Longest a flight may take, in seconds: how long its waiters wait for it.

        Locally, the request timeout. With a fleet store, also the wait for another
        process's lock (its request, or its lease lapsing if it died) and the store calls,
        so that a waiter never gives up on a flight that is still within its bounds.
        """
        limit = self.policy.request_timeout + WAIT_GRACE
        if self.fleet:
            limit += self._lock_wait + FLEET_STORE_CALLS * self.store_deadline + FAILOVER_GRACE
            limit += BUDGET_SETTLE
        return limit

    @property
    def _lock_wait(self) -> float:
        """Longest a flight waits for another process's lock before giving up on it."""
        return self.policy.request_timeout + LOCK_LEASE + WAIT_GRACE + 2 * self.store_deadline

    def may_retry(self, error: EightyEightPayError, now: float, until: Deadline) -> bool:
        """Whether a caller whose flight failed with ``error`` at ``now`` tries again.

        Only a transient failure is retried (a transport error, a 5xx, a malformed answer, a
        429), and only when the next request the backoff and the rate limit allow starts
        with at least :data:`~eightyeightpay.policy.MIN_ATTEMPT` of the caller's deadline
        ``until`` left (never for a fail-fast call). The caller then decides again: it
        pauses until that time, or joins the request another waiter of the same flight
        started. Otherwise the caller fails, which may leave a :class:`Notice`.
        """
        retry_at = max(now, self._send_allowed_at(now))
        if is_transient(error) and until.fits(retry_at):
            return True
        self._callers_fail(now, retry_at)
        return False

    def _governed_at(self, now: float) -> float:
        policy = self.policy
        return self.window.next_allowed(
            now, policy.per_minute, policy.per_hour, policy.minute_span, policy.hour_span
        )

    def _send_allowed_at(self, now: float) -> float:
        governed = self._governed_at(now)
        return max(governed, self.blocked_until)

    def _unavailable_error(self, now: float, retry_at: float) -> EightyEightPayError:
        last = self.last_error
        if now >= self.blocked_until or last is None or isinstance(last, RateLimited):
            # Nothing is sent now: a remembered 429 is answered as a local refusal.
            return RateLimited(retry_at - now, local=True)
        error = last.copy()
        if isinstance(error, RetryableError):
            error.retry_after = retry_at - now
        return error

    def _start(self, now: float, *, background: bool) -> Flight:
        self._numbers += 1
        self.flight = Flight(self._numbers, now, background, now + self.flight_limit)
        return self.flight

    # ---------------------------------------------------------------- the protocol

    def refresh(self, flight: Flight) -> Generator[Effect, Result, Settled]:
        """The refresh protocol for ``flight``: yields effects, receives their results.

        Without a shared store it sends the token request. With one it reads the fleet's
        token, takes the fleet lock, checks the fleet's rate budget, sends, writes the new
        token and releases the lock; a failing store degrades it to the local protocol.
        The driver performs each effect outside its lock and sends the result back under
        it; the final :class:`Settled` says what every waiter gets.
        """
        if self.fleet:
            settled = yield from self._fleet_refresh(flight)
        else:
            settled = yield from self._send(flight, flight.started_at)
        self._end(flight)  # only now: a fleet flight still writes and unlocks after its answer
        return settled

    def _send(
        self, flight: Flight, now: float, *, alone: bool = False
    ) -> Generator[Effect, Result, Settled]:
        self.window = self.window.record(now, self.policy.hour_span)
        if alone and self.fleet:
            self._unsynced(TOKEN_BUDGET, now)
        self.sent += 1
        self.tally = self.tally.sent()
        self._send_time = now
        self._awaiting = True
        exchange = yield SendTokenRequest(
            self.credentials.token_request(), self.policy.request_timeout
        )
        self._awaiting = False
        assert isinstance(exchange, Exchange)
        if exchange.response is not None and exchange.now > now:
            # 88Pay counts the request when it arrives, at the latest when its answer came
            # back: the windows count it then, so that a slow request (a first connection)
            # and a quick next one never fall into one of 88Pay's windows together.
            self.window = self.window.move(now, exchange.now, self.policy.hour_span)
        if exchange.response is not None:
            try:
                token = interpret_token_response(
                    exchange.response,
                    sent_at=now,
                    credentials=self.credentials,
                    policy=self.policy,
                    wall_now=exchange.wall,
                )
            except EightyEightPayError as rejected:
                self.tally = self.tally.ended(rejected)
                return self._failed(flight, rejected, now=exchange.now)
            if exchange.now >= token.usable_until:
                # Counted as a failure, so the backoff applies: never a loop of requests.
                unusable = MalformedResponse(
                    f"the token arrived unusable: it lives {token.expires_at - now:g} s and "
                    f"the answer took {exchange.now - now:g} s",
                    status=exchange.response.status,
                )
                self.tally = self.tally.ended(unusable)
                return self._failed(flight, unusable, now=exchange.now)
            self.tally = self.tally.ended(None)
            return self._succeeded(flight, token)
        failure = exchange.error or RequestTimeout(
            self.credentials.host, self.policy.request_timeout, may_have_been_sent=True
        )
        self.tally = self.tally.ended(failure)
        return self._failed(flight, failure, now=exchange.now)

    def _fleet_refresh(self, flight: Flight) -> Generator[Effect, Result, Settled]:
        key = self.credentials.cache_key
        owner = f"{self.instance}:{flight.number}"
        read = yield ReadShared(key)
        if isinstance(read, StoreFault) and not self.degraded and not read.stalled:
            read = yield from self._ride_out(key, read, self._spread(flight, read.now))
        if not isinstance(read, SharedRead):
            return (yield from self._alone(flight, read))
        if self.degraded:
            # Back from working alone: the store may have lost the fleet's members (a restart)
            # and they rejoin over a lifetime, each at its next refresh; until then a lower
            # count is a fleet still rejoining, not a smaller fleet.
            self._recount_at = read.now + self.policy.expected_lifetime
        joined = yield JoinFleet(
            key, self.instance, MEMBERSHIP_LIFETIMES * self.policy.expected_lifetime
        )
        if isinstance(joined, Members):
            recounting = joined.now < self._recount_at
            self.members = max(self.members, joined.count) if recounting else joined.count
        if self.books[TOKEN_BUDGET].unsynced:
            # Back from working alone: put this process's sends back into the fleet's budget
            # now, not only when it next reserves (the fleet may refresh through another).
            policy = self.policy
            limits = (policy.per_minute, policy.per_hour, policy.minute_span, policy.hour_span)
            yield from self._reserve_in_fleet(TOKEN_BUDGET, joined.now, limits)
        # A live holder releases within its request timeout; a dead one's lease lapses.
        give_up_at = read.now + self._lock_wait
        while True:
            shared = self._adopt(read)
            if shared is not None and read.now < shared.fresh_until:
                return self._succeeded(flight, shared)
            if read.cooldown > 0:
                return self._fleet_cooling(flight, read)
            asked_at = read.now
            lock = yield AcquireLock(key, owner, LOCK_LEASE)
            if not isinstance(lock, LockResult):
                return (yield from self._alone(flight, lock))
            if lock.acquired:
                break
            if shared is not None and lock.now < shared.usable_until:
                return self._succeeded(flight, shared)  # another process is refreshing it
            if lock.now >= give_up_at:
                return self._failed(
                    flight,
                    RequestTimeout(
                        self.credentials.host, self._lock_wait, may_have_been_sent=False
                    ),
                    now=lock.now,
                )
            yield Sleep(self.policy.fleet_poll_interval)
            read = yield ReadShared(key)
            if isinstance(read, StoreFault) and not self.degraded and not read.stalled:
                read = yield from self._ride_out(key, read, self._spread(flight, read.now))
            if not isinstance(read, SharedRead):
                return (yield from self._alone(flight, read))
        # The lease is ours until at least asked_at + LOCK_LEASE (set after we asked), and
        # renewed from now on while the request is out.
        yield KeepLock(key, owner, LOCK_LEASE, LOCK_LEASE / LEASE_RENEWALS)
        settled = yield from self._locked_refresh(flight, key, owner, asked_at + LOCK_LEASE)
        yield ReleaseLock(key, owner)
        return settled

    def _store_answered(self, result: Result) -> None:
        """Note how an API call's reservation ended: an answer from the store ends degraded mode.

        A token read through the store ends it too; the driver logs the store's return at
        the same answer, so :meth:`stats` and the log agree. A fault does not start it:
        only a token refresh decides to work alone.
        """
        if not isinstance(result, StoreFault):
            self.degraded, self.degraded_since = False, None

    def _ride_out(
        self, key: CacheKey, fault: StoreFault, due: float
    ) -> Generator[Effect, Result, SharedRead | StoreFault]:
        """Read again while the store fails fast, up to :data:`FAILOVER_GRACE` seconds.

        A background refresh (its token still usable) reads again only until ``due``, this
        process's own time to refresh alone (:meth:`_spread`): every process of the fleet
        found the store down at the same instant, and riding out the same grace would end
        the wait of all of them at one instant too, after their token had run out.
        """
        step = max(self.policy.fleet_poll_interval, 0.1)
        until, tries = fault.now + FAILOVER_GRACE, math.ceil(FAILOVER_GRACE / step)
        if due > fault.now:
            until = min(until, due)
        read: Result = fault
        # A configuration mistake (misconfigured) is not waited out: no failover cures it.
        while (
            isinstance(read, StoreFault)
            and not read.stalled
            and not read.misconfigured
            and read.now < until
            and tries
        ):
            tries -= 1  # bounded by count too: a clock that does not move cannot hold us here
            yield Sleep(min(step, until - read.now))
            read = yield ReadShared(key)
        assert isinstance(read, SharedRead | StoreFault)
        return read

    def _locked_refresh(
        self, flight: Flight, key: CacheKey, owner: str, lease_ends: float
    ) -> Generator[Effect, Result, Settled]:
        read = yield ReadShared(key)  # someone may have written between our read and the lock
        if not isinstance(read, SharedRead):
            return (yield from self._alone(flight, read))
        shared = self._adopt(read)
        if shared is not None and read.now < shared.fresh_until:
            return self._succeeded(flight, shared)
        if read.cooldown > 0:
            return self._fleet_cooling(flight, read)
        policy = self.policy
        limits = (policy.per_minute, policy.per_hour, policy.minute_span, policy.hour_span)
        budget = yield from self._reserve_in_fleet(TOKEN_BUDGET, read.now, limits)
        settle_until = self.books[TOKEN_BUDGET].settle_until
        if isinstance(budget, BudgetResult) and budget.now < settle_until:
            # Sends were put back: the flight waits for the fleet's, its callers with it.
            slept = yield Sleep(settle_until - budget.now)
            budget = yield from self._reserve_in_fleet(TOKEN_BUDGET, slept.now, limits)
        if not isinstance(budget, BudgetResult):
            return (yield from self._alone(flight, budget))
        if budget.wait > 0:
            return self._failed(flight, RateLimited(budget.wait, local=True), now=budget.now)
        if budget.now >= lease_ends:
            # The store was so slow that the first lease may have lapsed before a renewal
            # reached it, and another process may be sending: do not send; back off.
            stalled = RequestTimeout(
                self.credentials.host, self.policy.request_timeout, may_have_been_sent=False
            )
            return self._failed(flight, stalled, now=budget.now)
        settled = yield from self._send(flight, budget.now)
        token, error = settled.token, settled.error
        if token is not None and token.sent_at == budget.now:  # the token this flight got
            yield WriteShared(
                key,
                StoredToken(
                    token.access_token,
                    token.session_id,
                    token.merchant_id,
                    token.expires_at - token.sent_at,
                ),
                token.expires_at - budget.now,
            )
        elif isinstance(error, RateLimited) and not error.local:
            yield WriteCooldown(key, error.retry_after)
        return settled

    def _alone(self, flight: Flight, fault: Result) -> Generator[Effect, Result, Settled]:
        """The store failed: keep serving with this process's own single flight and limits."""
        now = fault.now
        if not self.degraded:
            self.degraded, self.degraded_since = True, now
        if self._spread(flight, now) > now and self.token is not None:
            return Settled(flight, self.token, None)  # served on; refreshed at its own time
        policy = self.policy
        wait = self._share_wait(
            self.window,
            now,
            (policy.per_minute, policy.per_hour, policy.minute_span, policy.hour_span),
        )
        if wait > 0:
            # The share binds only while the store is down: the process looks at the store
            # again after its backoff (not when its share frees, most of an hour at worst),
            # or when its share frees if that comes first: not a backoff's length later.
            return self._failed(flight, RateLimited(wait, local=True), now=now, share=True)
        return (yield from self._send(flight, now, alone=True))

    def _spread(self, flight: Flight, now: float) -> float:
        """When this process's own refresh of the token it serves is due, the store failing.

        Every process holds the fleet's token and finds the store down at the same instant:
        each draws, once per token, a time of its own within the token's remaining safe
        life, so that they do not all send at once. ``now`` for a caller without a token.
        """
        token = self.token
        if not flight.background or token is None or now >= token.usable_until:
            return now
        if self._spread_for != token.expires_at:
            self._spread_for = token.expires_at
            self._spread_until = now + self.rng.random() * (token.usable_until - now)
        return self._spread_until

    def _share_wait(self, window: RateWindow, now: float, limits: Limits) -> float:
        """Seconds until this process's share of a budget allows a send (0: now).

        Working alone, each of the :attr:`members` processes keeps ``1/members`` of each
        limit (rounded down), so together they stay within 88Pay's. A share of 0 waits a
        whole short window (the fleet is larger than the budget).
        """
        per_minute, per_hour, minute_span, hour_span = limits
        members = self.members
        if per_minute // members < 1 or per_hour // members < 1:
            return minute_span
        allowed = window.next_allowed(
            now, per_minute // members, per_hour // members, minute_span, hour_span
        )
        return max(0.0, allowed - now)

    def _reserve_in_fleet(
        self, purpose: Purpose, now: float, limits: Limits
    ) -> Generator[FleetEffect, Result, Result]:
        """Reserve one send in the fleet's ``purpose`` budget; the store's last answer.

        A :class:`BudgetResult` with the epoch this process knows means the store decided
        (``wait`` 0: recorded). Another epoch means the store's budget is new to this
        process, or was lost (a restart without persistence): every own send of the
        windows is then put back. Sends are put back (those lost, or made while the store
        was down) with a reservation that records no new send; this process reserves
        again only :data:`BUDGET_SETTLE` seconds later (answered here as a wait), when the
        fleet's other active processes have put theirs back too. Anything else is the
        store failing.
        """
        per_minute, per_hour, minute_span, hour_span = limits
        key = self.credentials.cache_key
        settling = self.books[purpose]
        if now < settling.settle_until:
            return BudgetResult(settling.settle_until - now, now, settling.epoch)
        result: Result = StoreFault("the store's budget epoch kept changing", now)
        for _ in range(EPOCH_TRIES):
            book = self.books[purpose]
            # Taken out while in transit, so that a concurrent reservation does not send
            # the same sends again; put back if the store fails.
            self.books[purpose] = attrs.evolve(book, unsynced=())
            backfill = tuple(now - t for t in book.unsynced if t > now - hour_span)
            request = BudgetRequest(
                purpose,
                per_minute,
                per_hour,
                minute_span,
                hour_span,
                book.epoch,
                backfill,
                send=not backfill,
            )
            result = yield ReserveFleetBudget(key, request)
            current = self.books[purpose]
            if not isinstance(result, BudgetResult):
                unsynced = tuple(sorted({*current.unsynced, *book.unsynced}))
                self.books[purpose] = attrs.evolve(current, unsynced=unsynced)
                return result
            now = result.now
            if result.epoch == book.epoch:
                if not backfill:
                    return result
                # Put back, not reserved: the others put theirs back before anyone reserves.
                settle_until = now + BUDGET_SETTLE
                self.books[purpose] = attrs.evolve(current, settle_until=settle_until)
                return BudgetResult(BUDGET_SETTLE, now, result.epoch)
            if current.epoch != result.epoch:  # not already learnt by a concurrent call
                own = self.api_window if purpose == API_BUDGET else self.window
                sends = tuple(t for t in own.sends if t > now - hour_span)
                self.books[purpose] = FleetBook(result.epoch, sends)
        return StoreFault("the store's budget epoch kept changing", now)

    def _unsynced(self, purpose: Purpose, sent: float) -> None:
        """Note an own send the fleet's budget does not hold (the store was failing)."""
        book = self.books[purpose]
        self.books[purpose] = attrs.evolve(book, unsynced=(*book.unsynced, sent))

    def _fleet_cooling(self, flight: Flight, read: SharedRead) -> Settled:
        self.degraded, self.degraded_since = False, None
        return self._failed(flight, RateLimited(read.cooldown, local=True), now=read.now)

    def _adopt(self, read: SharedRead) -> Token | None:
        """The fleet's token as a local token, its life measured by the store's TTL."""
        stored = read.token
        self.degraded, self.degraded_since = False, None
        if (
            stored is None
            or read.ttl <= 0
            or stored.merchant_id != self.credentials.merchant_id
            or stored.access_token in self._rejected
        ):
            return None
        lifetime = min(stored.lifetime, self.policy.expected_lifetime * 24)
        return Token.issue(
            stored.access_token,
            stored.session_id,
            sent_at=read.now + min(read.ttl, lifetime) - lifetime,
            lifetime=lifetime,
            merchant_id=stored.merchant_id,
            policy=self.policy,
        )

    def succeed(self, flight: Flight, token: Token) -> Settled:
        """Record a new token obtained by ``flight`` and end it."""
        settled = self._succeeded(flight, token)
        self._end(flight)
        return settled

    def fail(self, flight: Flight, error: EightyEightPayError, *, now: float) -> Settled:
        """Record that ``flight`` failed with ``error``, set the backoff and end it."""
        if self._awaiting and self._current(flight):  # the driver failed with the request out
            self._awaiting = False
            self.tally = self.tally.ended(error)
        settled = self._failed(flight, error, now=now)
        self._end(flight)
        return settled

    def _succeeded(self, flight: Flight, token: Token) -> Settled:
        if self.token is None or token.expires_at >= self.token.expires_at:
            self.token = token
        if self._trouble:
            merchant, attempts = self.credentials.merchant_id, self.failures
            self.notices.append(
                Notice(
                    "info",
                    f"token refresh for {merchant} went through after {attempts} attempt(s) "
                    "held back for this process's share of 88Pay's token limits"
                    if self._trouble.startswith("held")
                    else f"token refresh for {merchant} recovered after {attempts} failed "
                    "attempt(s)",
                )
            )
            self._trouble = ""
        self.failures = 0
        self.last_error = None
        self.blocked_until = -math.inf
        return Settled(flight, self.token, None)

    def _failed(
        self, flight: Flight, error: EightyEightPayError, *, now: float, share: bool = False
    ) -> Settled:
        """Record the failure of ``flight`` at ``now`` and set the backoff.

        A 429 (88Pay's, or the fleet budget's wait) holds the next send back for its
        ``retry_after`` at least; a refusal of this process's degraded-mode ``share`` does
        not, since the store's return ends it: it holds the next attempt back for the
        backoff or until the share frees (its ``retry_after``), whichever ends first.
        """
        if (
            isinstance(error, TransportError)
            and not error.may_have_been_sent
            and self._send_time is not None
        ):
            self.window = self.window.forget(self._send_time)  # 88Pay never saw it
            book = self.books[TOKEN_BUDGET]
            unsent = tuple(t for t in book.unsynced if t != self._send_time)
            self.books[TOKEN_BUDGET] = attrs.evolve(book, unsynced=unsent)
        self.failures += 1
        server_wait = error.retry_after if isinstance(error, RateLimited) and not share else None
        delay = backoff_delay(self.failures, self.rng, self.policy, retry_after=server_wait)
        share_wait = error.retry_after if share and isinstance(error, RateLimited) else None
        if share_wait is not None:
            delay = min(delay, share_wait)
        self.blocked_until = max(self.blocked_until, now + delay)
        if isinstance(error, RateLimited):
            error = error.waiting(delay)  # its message says the wait too
        elif isinstance(error, RetryableError):
            error.retry_after = delay
        self.last_error = error
        if share_wait is not None:
            self._notice_held(now, delay, share_wait)
        else:
            self._notice_failure(error, now, delay)
        return Settled(flight, None, error)

    def _notice_held(self, now: float, delay: float, share_wait: float) -> None:
        """A refresh held back for this process's share: one WARNING, not a failure's."""
        token, policy, members = self.token, self.policy, self.members
        if token is None or self._trouble:
            return
        self._trouble = "held"
        left = token.usable_until - now
        self.notices.append(
            Notice(
                "warning",
                f"token refresh for {self.credentials.merchant_id} held back: the fleet store "
                "is down and this process keeps to its share of 88Pay's token limits "
                f"({policy.per_minute // members} a minute and {policy.per_hour // members} an "
                f"hour, for {members} processes); "
                + (f"the current token has {left:.1f} s left" if left > 0 else "no usable token")
                + f"; next attempt in {delay:.1f} s, the share allows a request in "
                f"{share_wait:.1f} s; callers wait for it within their deadline",
            )
        )

    def _callers_fail(self, now: float, retry_at: float) -> None:
        """A caller fails for want of a token while refreshes are held back for the share."""
        if self._trouble != "held":
            return
        self._trouble = "held failing"
        self.notices.append(
            Notice(
                "error",
                f"calls for {self.credentials.merchant_id} fail: the token ran out while this "
                "process keeps to its share of 88Pay's token limits (the fleet store is down); "
                f"a token can next be requested in {max(0.0, retry_at - now):.1f} s, later "
                "than those calls' deadline",
            )
        )

    def _notice_failure(self, error: EightyEightPayError, now: float, delay: float) -> None:
        token, merchant, kind = self.token, self.credentials.merchant_id, type(error).__name__
        if token is None or token.usable_until <= now:  # callers meet the error
            needs_a_person = isinstance(error, InvalidCredentials | AccessDenied)
            if self._trouble == "" or (needs_a_person and self._trouble != "refused"):
                self._trouble = "refused" if needs_a_person else "failing"
                self.notices.append(
                    Notice(
                        "error" if needs_a_person else "warning",
                        f"token request for {merchant} failed ({kind}) with no usable token: "
                        f"calls get the error; next attempt allowed in {delay:.1f} s",
                    )
                )
            return
        left = token.usable_until - now
        if left > 0 and self._trouble in ("", "held"):
            self._trouble = "warned"
            self.notices.append(
                Notice(
                    "warning",
                    f"token refresh for {merchant} failed ({kind}); the current token has "
                    f"{left:.1f} s left; next attempt allowed in {delay:.1f} s",
                )
            )
        elif left <= 0 and self._trouble in ("warned", "held"):
            self._ran_out(token)

    def _ran_out(self, token: Token) -> None:
        self._trouble = "ran out"
        kind = type(self.last_error).__name__ if self.last_error is not None else "none"
        self.notices.append(
            Notice(
                "error",
                f"the token of {self.credentials.merchant_id} ran out because refreshes kept "
                f"failing ({self.failures} in a row, the last {kind}); calls fail until one "
                "succeeds",
            )
        )

    # ---------------------------------------------------------------- the API governor

    def reserve_api(self, now: float) -> Generator[FleetEffect, Result, float]:
        """Reserve one API call at ``now``; returns the seconds to wait first (0: go).

        0 means the call may be sent and is counted; otherwise the seconds until one may be
        (88Pay's 60/minute and 1,000/hour API limits, over windows of the policy's
        ``minute_span`` and ``hour_span`` seconds, or a 429's cool-down). With a fleet
        store the budget and the cool-down are the fleet's: the reservation first reads the
        fleet's API cool-down (a :class:`~eightyeightpay.fleet.ReadShared` of
        :func:`~eightyeightpay.fleet.api_calls_key`; while one runs, its seconds left are
        the wait, and this process keeps it as its own), then yields a
        :class:`~eightyeightpay.fleet.ReserveFleetBudget` of the ``"api"`` budget, counted
        on the store's clock. While the store fails, this process keeps to its share of
        the limits (as for tokens) and to its own cool-down, and tries the store again
        every :data:`STORE_PROBE_INTERVAL` seconds. Without a store nothing is yielded.
        """
        if not self.fleet:
            return self.reserve_api_locally(now)
        kept, limits = self._api_kept, self._api_limits
        allowed = self._api_allowed(now)
        if allowed > now:
            return allowed - now
        if not self.api_alone or now >= self._probe_at:
            self._probe_at = now + STORE_PROBE_INTERVAL
            result = yield ReadShared(api_calls_key(self.credentials.cache_key))
            if isinstance(result, SharedRead):
                now = result.now
                self._store_answered(result)
                if result.cooldown > 0 or not kept:
                    self.api_alone = False
                    self.api_blocked_until = max(self.api_blocked_until, now + result.cooldown)
                    return result.cooldown
                result = yield from self._reserve_in_fleet(API_BUDGET, now, limits)
            now = result.now
            if isinstance(result, BudgetResult):
                self.api_alone = False
                if result.wait > 0:
                    return result.wait
                self._count_api_send(now)
                return 0.0
            self.api_alone = True
        if not kept:
            return 0.0
        wait = self._share_wait(self.api_window, now, limits)  # working alone
        if wait > 0:
            return wait
        self._unsynced(API_BUDGET, now)
        self._count_api_send(now)
        return 0.0

    def reserve_api_locally(self, now: float) -> float:
        """:meth:`reserve_api` for a machine without a fleet store: decided at once.

        Returns the seconds to wait first (0: the call may be sent, and is counted).
        """
        allowed = self._api_allowed(now)
        if allowed > now:
            return allowed - now
        if self._api_kept:
            self._count_api_send(now)
        return 0.0

    def _count_api_send(self, now: float) -> None:
        self.api_window = self.api_window.record(now, self.policy.hour_span)
        self.api_reserved_at = now

    def api_send_ended(self, reserved_at: float, now: float, *, left: bool = True) -> None:
        """The send reserved at ``reserved_at`` (its permit's time) ended at ``now``.

        Its answer came back, or its exchange failed, at ``now``. 88Pay counts a call when
        it arrives, at the latest when its answer comes back, so the window counts the send
        then (as it does a token request): a send that waited in the transport for a
        connection, or for one to be opened, would otherwise leave this window before it
        left 88Pay's, and the next minute's sends could draw a 429. The count stays the
        same. With a fleet store the fleet's budget keeps the send at its reservation (on
        the store's clock); this process's own window, which decides while the store
        fails, moves. A send that provably never ``left`` this process (its connection could
        not be opened) is taken out of the window, as a token request is: 88Pay never saw
        it, and a retry counts anew.
        """
        if not left:
            self.api_window = self.api_window.forget(reserved_at)
        elif now > reserved_at:
            self.api_window = self.api_window.move(reserved_at, now, self.policy.hour_span)

    def _api_allowed(self, now: float) -> float:
        """When this process's own cool-down and the policy's API limits allow a call."""
        if not self._api_kept:
            return self.api_blocked_until
        return max(self.api_blocked_until, self.api_window.next_allowed(now, *self._api_limits))

    def api_hold(self, now: float) -> tuple[str, str]:
        """Why API calls are held back at ``now``, and by whom: ``(cause, scope)``.

        A query, for telemetry (see :class:`~eightyeightpay.api.ApiPermit`): ``cause`` is
        ``"cool_down"`` while an API 429's cool-down holds, else ``"limit"``; ``scope`` is
        ``"fleet"`` when a fleet store governs API calls, else ``"process"``.
        """
        cause = "cool_down" if self.api_blocked_until > now else "limit"
        return cause, "fleet" if self.fleet and not self.api_alone else "process"

    def api_cool_down(self, now: float, seconds: float) -> Generator[FleetEffect, Result, float]:
        """88Pay answered an API call 429: send no API call for ``seconds`` from ``now``.

        The cool-down is kept here at once; with a fleet store it is also written there
        (a :class:`~eightyeightpay.fleet.WriteCooldown` of
        :func:`~eightyeightpay.fleet.api_calls_key`), so that no process of the fleet sends
        an API call before it ends. A store that fails leaves the cool-down this process's
        own. Returns the time after the write (``now`` without a store).
        """
        # One notice per streak: 429s less than a minute apart (a limit spent elsewhere
        # draws one after each short cool-down) are one streak.
        if now - self._api_429_at > self.policy.minute_span:
            self.notices.append(
                Notice(
                    "warning",
                    f"88Pay answered an API call for {self.credentials.merchant_id} with 429: "
                    f"no API call is sent for {seconds:.1f} s; calls meanwhile wait within "
                    "their deadline or get ApiRateLimited(local=True)",
                )
            )
        self._api_429_at = now
        self.api_blocked_until = max(self.api_blocked_until, now + seconds)
        if not self.fleet:
            return now
        done = yield WriteCooldown(api_calls_key(self.credentials.cache_key), seconds)
        return done.now

    def take_notices(self) -> tuple[Notice, ...]:
        """The notices since the last call, oldest first, for the driver to log."""
        notices, self.notices = tuple(self.notices), []
        return notices

    def abort(self, flight: Flight) -> None:
        """Forget ``flight`` without a result (its driver stopped before it finished).

        The send it reserved stays in the rate window: it may have reached the server.
        """
        if self._awaiting and self._current(flight):
            self._awaiting = False
            self.tally = self.tally.abandoned()
        self._end(flight)

    def _current(self, flight: Flight) -> bool:
        return self.flight is not None and self.flight.number == flight.number

    def _end(self, flight: Flight) -> None:
        if self._current(flight):
            self.flight = None
            self._send_time = None

    # ---------------------------------------------------------------- after use

    def stats(self, now: float) -> Stats:
        """The machine's counts and state at ``now`` (a query: it changes nothing)."""
        tally, token, policy = self.tally, self.token, self.policy
        remaining = None if token is None else max(0.0, token.usable_until - now)
        mode = "local" if not self.fleet else "degraded" if self.degraded else "healthy"
        # blocked_until is a 429's cool-down only when a 429 (88Pay's or the fleet's) set it.
        cooling = self.blocked_until if isinstance(self.last_error, RateLimited) else now
        return Stats(
            merchant_id=self.credentials.merchant_id,
            base_url=self.credentials.base_url,
            at=now,
            token_requests=tally.token_requests,
            outcomes=tuple(zip(OUTCOMES, tally.outcomes, strict=True)),
            rate_limited=tally.rate_limited,
            failures_in_row=self.failures,
            waited=tally.waited,
            rejected_tokens=tally.rejected,
            token_remaining=remaining,
            refreshing=self.flight is not None,
            next_request_in=max(0.0, self._send_allowed_at(now) - now),
            cool_down_remaining=max(0.0, cooling - now),
            minute_spent=self.window.count(now, policy.minute_span),
            hour_spent=self.window.count(now, policy.hour_span),
            per_minute=policy.per_minute,
            per_hour=policy.per_hour,
            store_mode=mode,
            degraded_since=self.degraded_since if self.degraded else None,
            api_minute_spent=self.api_window.count(now, policy.minute_span),
            api_hour_spent=self.api_window.count(now, policy.hour_span),
            api_per_minute=policy.api_per_minute,
            api_per_hour=policy.api_per_hour,
            api_cool_down_remaining=max(0.0, self.api_blocked_until - now),
        )

    def invalidate(self, token: Token) -> bool:
        """Drop ``token`` after the API rejected it; a newer token is never dropped.

        The token is also remembered as rejected, so that a fleet store still holding it
        is not adopted again: the next refresh requests a new token and replaces it there.
        """
        self._rejected = (*self._rejected[-3:], token.access_token)
        self.tally = self.tally.token_rejected()
        if self.token is not None and self.token == token:
            self.token = None
            return True
        return False


def transport_failure(host: str, detail: str) -> TransportError:
    """A transport error for a failure the driver could not classify (never sent is unknown)."""
    return TransportError(
        f"The token request to {host} failed unexpectedly ({detail}).", may_have_been_sent=True
    )
