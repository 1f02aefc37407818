"""The refresh policy: safety margin, advisory lead, rate limits and backoff, validated.

A token of life ``L`` (60 s from 88Pay) is used until ``margin`` seconds before it expires
(mandatory: a token with less left is never handed out) and a refresh is started ``lead``
seconds before that (advisory: the old token keeps being served meanwhile). Steady use
therefore costs one token request every ``L - margin - lead`` seconds.
"""

from __future__ import annotations

from typing import Protocol

import attrs

from .errors import ConfigurationError, DeadlineExceeded, InvalidPolicy

__all__ = [
    "MIN_ATTEMPT",
    "MIN_COMPRESSED_LIFETIME",
    "Deadline",
    "Policy",
    "Rng",
    "backoff_delay",
    "call_deadline",
    "check_deadline",
]

SECONDS_PER_HOUR = 3600.0

MIN_COMPRESSED_LIFETIME = 1.0
"""Seconds: the shortest token life :meth:`Policy.compressed` may leave. Timeouts, backoff
and round trips are not compressed, so a token living less would expire before it is used."""


class Rng(Protocol):
    """The randomness the core needs, passed in by the driver (``random.Random`` fits)."""

    def random(self) -> float:
        """A float in [0, 1)."""
        ...


@attrs.frozen
class Policy:
    """How tokens are refreshed and how the rate limit is kept.

    The defaults keep steady use at no more than 74 token requests an hour (the floor for
    60 s tokens is 60; a 10 s margin alone costs 72) and within 88Pay's limits of 10 a
    minute and 100 an hour. A policy that cannot work is refused when it is built.
    """

    expected_lifetime: float = 60.0
    """Token life 88Pay documents, in seconds. Windows shrink in proportion for shorter tokens."""
    margin: float = 10.0
    """Mandatory margin: a token with fewer seconds left is never used."""
    max_hourly_cost: float = 74.0
    """Steady-state token requests per hour the default lead is derived from."""
    lead: float = attrs.field()
    """Advisory lead: seconds before the margin at which a background refresh starts."""
    per_minute: int = 10
    """Token requests allowed per rolling minute (88Pay: 10)."""
    per_hour: int = 100
    """Token requests allowed per rolling hour (88Pay: 100)."""
    minute_span: float = 60.0
    """Seconds every short rate window spans: the ``per_minute`` token requests' and the
    ``api_per_minute`` API calls' (60 at 88Pay for both; shorter only in a compressed
    policy)."""
    hour_span: float = 3600.0
    """Seconds every long rate window spans: the ``per_hour`` token requests' and the
    ``api_per_hour`` API calls' (3600 at 88Pay for both; shorter only in a compressed
    policy)."""
    api_per_minute: int | None = 60
    """API calls (``request()``) allowed per rolling minute (:attr:`minute_span` seconds)
    per merchant (88Pay: 60).

    None (with :attr:`api_per_hour` None) keeps no API limit on this side: only for an
    emulator without limits, such as the benchmarks'."""
    api_per_hour: int | None = 1000
    """API calls allowed per rolling hour (:attr:`hour_span` seconds) per merchant (88Pay:
    1,000); None: see above."""
    backoff_initial: float = 1.0
    """First backoff after a failed token request, in seconds."""
    backoff_cap: float = 60.0
    """Longest backoff, in seconds."""
    request_timeout: float = 10.0
    """Longest a token request may take before it counts as failed."""
    deadline: float = 10.0
    """Seconds a ``get_token()`` or ``request()`` call may take by default, retries included.

    The deadline bounds the whole call: each exchange the call makes (its API call, its
    wait for a token request and for the store) gets at most the time left, so an API call
    is sent with ``min(timeout, time left)``, not its whole ``timeout``; no attempt starts
    with less than :data:`MIN_ATTEMPT` left, and the call then raises
    :class:`~eightyeightpay.errors.DeadlineExceeded` saying when a token or a call can next
    be had. A token request is shared by every caller waiting for it and keeps its own
    :attr:`request_timeout`: a caller whose deadline comes first stops waiting, the request
    goes on for the others and its token is cached. Within the deadline, transient failures
    are retried with the backoff. 10 s fits inside a web request's own timeout (gunicorn's
    default is 30 s). A call's ``deadline=0`` fails fast: exactly one attempt, with its
    normal timeout (:attr:`request_timeout`, or the manager's ``timeout`` for an API call),
    and no waiting for a backoff, a cool-down or the rate limit.
    """
    fleet_poll_interval: float = 0.05
    """Seconds between looks at a shared store while another process refreshes."""
    assumed_fleet_size: int = 10
    """Processes a fleet-store process assumes share its merchant's budget until the store
    has counted them: it keeps to ``1/assumed_fleet_size`` of each limit (rounded down) while
    it works alone without ever having reached the store (an outage or a configuration
    mistake at start-up). Once the store has counted the fleet, the count is used instead.

    The default, 10, is 88Pay's per-minute token limit: the largest fleet in which every
    process can still have a share (1 token request a minute, 10 an hour), so a fleet of
    up to 10 processes that starts without its store never draws a 429. The cost is
    availability: such a process gets a token at most once a minute (10 an hour), and its
    callers get a local :class:`~eightyeightpay.errors.RateLimited` in between. Set it to
    your fleet's real size (or more) to trade neither away needlessly; a value above
    :attr:`per_minute` leaves a process that never reached the store no share at all (it
    sends nothing until it does). A count, not a time: :meth:`compressed` keeps it."""

    @lead.default
    def _derived_lead(self) -> float:
        usable = self.expected_lifetime - self.margin
        return max(0.0, usable - SECONDS_PER_HOUR / self.max_hourly_cost)

    def __attrs_post_init__(self) -> None:
        numbers = {
            "expected_lifetime": self.expected_lifetime,
            "margin": self.margin,
            "lead": self.lead,
            "minute_span": self.minute_span,
            "hour_span": self.hour_span,
            "backoff_initial": self.backoff_initial,
            "backoff_cap": self.backoff_cap,
            "request_timeout": self.request_timeout,
            "deadline": self.deadline,
            "fleet_poll_interval": self.fleet_poll_interval,
        }
        for name, value in numbers.items():
            if not isinstance(value, int | float) or value != value or value < 0:
                raise InvalidPolicy(f"Policy.{name} must be a non-negative number, not {value!r}.")
        if (
            self.expected_lifetime <= 0
            or self.request_timeout <= 0
            or self.backoff_initial <= 0
            or self.minute_span <= 0
            or self.hour_span <= 0
        ):
            raise InvalidPolicy(
                "expected_lifetime, request_timeout, backoff_initial, minute_span and hour_span "
                "must be > 0."
            )
        size = self.assumed_fleet_size
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise InvalidPolicy(
                f"Policy.assumed_fleet_size must be a whole number of processes, at least 1, "
                f"not {size!r}."
            )
        if self.backoff_cap < self.backoff_initial:
            raise InvalidPolicy("Policy.backoff_cap must be at least backoff_initial.")
        api_limits = [n for n in (self.api_per_minute, self.api_per_hour) if n is not None]
        if min(self.per_minute, self.per_hour, *api_limits) < 1:
            raise InvalidPolicy(
                "Policy.per_minute, per_hour, api_per_minute and api_per_hour must be at least 1."
            )
        period = self.refresh_period
        if period <= 0:
            raise InvalidPolicy(
                f"margin ({self.margin:g} s) plus lead ({self.lead:g} s) must be shorter than the "
                f"token's life ({self.expected_lifetime:g} s); nothing would be left to use."
            )
        hourly = self.hour_span / period
        if hourly > self.per_hour or self.minute_span / period > self.per_minute:
            hour = "an hour" if self.hour_span == 3600 else f"per {self.hour_span:g} s"
            minute = "a minute" if self.minute_span == 60 else f"per {self.minute_span:g} s"
            raise InvalidPolicy(
                f"With margin {self.margin:g} s and lead {self.lead:g} s a token is replaced every "
                f"{period:.2f} s: {hourly:.0f} token requests {hour}, over the limit of "
                f"{self.per_hour} {hour} / {self.per_minute} {minute}. Use smaller windows."
            )

    @property
    def refresh_period(self) -> float:
        """Seconds between token requests under steady use, for a full-life token."""
        return self.expected_lifetime - self.margin - self.lead

    @property
    def steady_hourly_cost(self) -> float:
        """Token requests per hour under steady use."""
        return SECONDS_PER_HOUR / self.refresh_period

    def compressed(self, factor: float) -> Policy:
        """A copy whose clock runs ``factor`` times faster, for time-compressed tests.

        The token's expected life, the margin, the lead and the spans of the rate windows
        (:attr:`minute_span` and :attr:`hour_span`, which the token requests' and the API
        calls' limits share) are divided by ``factor``; every count stays, so every limit is
        compressed in proportion and none grants a burst 88Pay would refuse.
        ``Policy().compressed(10)`` expects 6 s tokens and allows 10 token requests per 6 s
        and 100 per 360 s, and 60 API calls per 6 s and 1,000 per 360 s: the scale of
        ``eightyeightpay sandbox --token-lifetime 6 --token-limit 10/6 --token-limit 100/360
        --api-limit 60/6 --api-limit 1000/360``. Backoff, timeouts, the call deadline and the
        store poll interval are network times and stay, and so does
        :attr:`assumed_fleet_size` (a count of processes: each limit's count stays, so each
        share does too). Raises
        :class:`~eightyeightpay.errors.InvalidPolicy` when ``factor`` is not a positive finite
        number, or would leave tokens less than :data:`MIN_COMPRESSED_LIFETIME` of life (a
        factor over 60 for the default policy).
        """
        if (
            isinstance(factor, bool)
            or not isinstance(factor, int | float)
            or not 0 < factor < float("inf")
        ):
            raise InvalidPolicy(f"compressed() needs a positive finite factor, not {factor!r}.")
        if self.expected_lifetime / factor < MIN_COMPRESSED_LIFETIME:
            most = self.expected_lifetime / MIN_COMPRESSED_LIFETIME
            raise InvalidPolicy(
                f"compressed({factor!r}) would expect tokens living "
                f"{self.expected_lifetime / factor:.3g} s. A token must outlive a round trip to "
                f"the API (timeouts and backoff are not compressed), so its compressed life "
                f"must be at least {MIN_COMPRESSED_LIFETIME:g} s: use a factor of at most "
                f"{most:g}."
            )
        return attrs.evolve(
            self,
            expected_lifetime=self.expected_lifetime / factor,
            margin=self.margin / factor,
            lead=self.lead / factor,
            minute_span=self.minute_span / factor,
            hour_span=self.hour_span / factor,
        )

    def windows_for(self, lifetime: float) -> tuple[float, float]:
        """The (margin, lead) to apply to a token of ``lifetime`` seconds.

        Tokens shorter than :attr:`expected_lifetime` get proportionally smaller windows, so
        that a short-lived token is still usable for the same share of its life.
        """
        scale = min(1.0, lifetime / self.expected_lifetime) if lifetime > 0 else 0.0
        return self.margin * scale, self.lead * scale


def backoff_delay(
    attempt: int, rng: Rng, policy: Policy, *, retry_after: float | None = None
) -> float:
    """Seconds to wait after the ``attempt``-th consecutive failure (1 for the first).

    Exponential from ``backoff_initial``, doubled each time and capped at ``backoff_cap``,
    with jitter drawn from ``rng`` in the upper half: the delay lies in ``[d/2, d]``. A
    server's ``retry_after`` wins when it is longer.
    """
    exponent = min(max(attempt, 1) - 1, 62)
    ceiling = min(policy.backoff_cap, policy.backoff_initial * 2.0**exponent)
    delay = ceiling * (0.5 + 0.5 * rng.random())
    if retry_after is not None and retry_after > delay:
        return retry_after
    return delay


MIN_ATTEMPT = 0.05
"""Seconds: an attempt (a token request to start, an API call to send) is not started with
less of the call's deadline left; the call fails with a typed error instead. Fail-fast
calls (``deadline=0``) make their one attempt whatever is left."""


@attrs.frozen
class Deadline:
    """When one call must end, and whether it fails fast: the core's reading of ``deadline=``.

    Every question is answered for a ``now`` (monotonic seconds) passed in. A fail-fast call
    (``deadline=0``) makes one attempt with its exchange's normal timeout and waits for
    nothing; any other call gives each exchange at most the time left before :attr:`at` and
    starts no attempt with less than :data:`MIN_ATTEMPT` left.
    """

    at: float
    """Monotonic time the call must end by."""
    fail_fast: bool = False
    """True for ``deadline=0``: one attempt, no waiting for a backoff, a cool-down or a limit."""

    def left(self, now: float) -> float:
        """Seconds left at ``now`` (never negative)."""
        return max(0.0, self.at - now)

    def may_start(self, now: float) -> bool:
        """Whether an attempt may start at ``now``: fail-fast's one attempt, or enough left."""
        return self.fail_fast or self.at - now >= MIN_ATTEMPT

    def fits(self, start_at: float) -> bool:
        """Whether waiting until ``start_at`` and then starting an attempt fits the deadline.

        Never for a fail-fast call, which does not wait.
        """
        return not self.fail_fast and self.at - start_at >= MIN_ATTEMPT

    def budget(self, now: float, timeout: float) -> float:
        """Seconds an exchange starting at ``now`` may take: ``timeout``, cut to the time left.

        A fail-fast call's one attempt keeps its whole ``timeout``.
        """
        return timeout if self.fail_fast else min(timeout, self.left(now))

    @staticmethod
    def too_late(what: str, *, sent: bool) -> DeadlineExceeded:
        """The error of a call that did not start ``what``: less than :data:`MIN_ATTEMPT` left.

        ``sent``: whether an earlier attempt of the call may have reached 88Pay.
        """
        return DeadlineExceeded(
            f"before {what} (less than {MIN_ATTEMPT:g} s was left; it was not sent this time)",
            retry_after=0.0,
            may_have_been_sent=sent,
        )

    def wait_until(self, end: float) -> float:
        """When a wait for something ending by ``end`` (a flight) stops.

        ``end``, or the deadline if earlier; a fail-fast call waits for its one attempt.
        """
        return end if self.fail_fast else min(end, self.at)


def call_deadline(policy: Policy, now: float, deadline: float | None) -> Deadline:
    """The deadline of a call made at ``now`` with ``deadline`` seconds.

    None means the policy's :attr:`Policy.deadline`; 0 fails fast. Raises
    :class:`~eightyeightpay.errors.ConfigurationError` for a negative or non-number value.
    """
    seconds = policy.deadline if deadline is None else check_deadline(deadline)
    return Deadline(now + seconds, fail_fast=seconds == 0)


def check_deadline(deadline: float) -> float:
    """``deadline`` when it is a number of seconds a call may take (0 fails fast).

    Raises :class:`~eightyeightpay.errors.ConfigurationError` for a negative number, NaN, a
    bool or anything that is not an int or a float (``"5"``). The managers check a given
    deadline before the cached path, so a mistaken one is refused on every call.
    """
    if isinstance(deadline, bool) or not isinstance(deadline, int | float) or not deadline >= 0:
        raise ConfigurationError(
            f"deadline must be a non-negative number of seconds (0 fails fast), not {deadline!r}."
        )
    return deadline
