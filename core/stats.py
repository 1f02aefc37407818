"""What a manager has done and where it stands: counts kept by the core, read as one value.

The token machine keeps a :class:`Tally` (a frozen value it replaces at each event on the
slow path: a send, its outcome, a caller that waits, a token rejected by the API). A
manager's ``stats()`` asks the machine for a :class:`Stats` at ``now``: the tally plus the
state the machine already holds (its token, its rate window, its failures in a row, its
store mode). Nothing here reads a clock, and nothing secret is kept: no token, session id
or API key, only counts, seconds and the merchant id.
"""

from __future__ import annotations

from typing import Any

import attrs

from .errors import (
    AccessDenied,
    CredentialsError,
    EightyEightPayError,
    MalformedResponse,
    RateLimited,
    RequestTimeout,
    ServerError,
    TransportError,
)

__all__ = ["OUTCOMES", "STORE_MODES", "Stats", "Tally", "outcome_of"]

OUTCOMES = (
    "ok",
    "rate_limited",
    "invalid_credentials",
    "access_denied",
    "server_error",
    "timeout",
    "transport_error",
    "malformed_response",
    "other",
    "abandoned",
)
"""How a token request sent to 88Pay can end, in the order :attr:`Stats.outcomes` lists them.

``abandoned``: the flight was cancelled or its manager closed while the request was out.
"""

STORE_MODES = ("local", "healthy", "degraded")
"""A store's modes: ``local`` (the memory store: nothing shared), ``healthy`` (a fleet store
answering) and ``degraded`` (a fleet store failing; the process works alone)."""


def outcome_of(error: EightyEightPayError | None) -> str:
    """The :data:`OUTCOMES` name of a token request that ended with ``error`` (None: ``ok``)."""
    match error:
        case None:
            return "ok"
        case RateLimited():
            return "rate_limited"
        case CredentialsError():
            return "invalid_credentials"
        case AccessDenied():
            return "access_denied"
        case ServerError():
            return "server_error"
        case RequestTimeout():
            return "timeout"
        case TransportError():
            return "transport_error"
        case MalformedResponse():
            return "malformed_response"
    return "other"


@attrs.frozen
class Tally:
    """The counts of one token machine over its life; every method returns a new value."""

    token_requests: int = 0
    """Token requests sent, or attempted: one refused before it left is counted here, though
    not in the rate windows."""
    outcomes: tuple[int, ...] = (0,) * len(OUTCOMES)
    """Sent requests by how they ended, in :data:`OUTCOMES` order."""
    rate_limited: int = 0
    """429 answers received from 88Pay (local refusals are not counted)."""
    waited: int = 0
    """Callers that had no usable token and waited for a token request."""
    rejected: int = 0
    """Tokens the API rejected with 401 and the library dropped (each call then replays once)."""

    def sent(self) -> Tally:
        """One more token request sent."""
        return attrs.evolve(self, token_requests=self.token_requests + 1)

    def ended(self, error: EightyEightPayError | None) -> Tally:
        """A sent request ended with ``error`` (None: a token)."""
        index = OUTCOMES.index(outcome_of(error))
        outcomes = (*self.outcomes[:index], self.outcomes[index] + 1, *self.outcomes[index + 1 :])
        received_429 = isinstance(error, RateLimited) and not error.local
        return attrs.evolve(self, outcomes=outcomes, rate_limited=self.rate_limited + received_429)

    def abandoned(self) -> Tally:
        """A sent request will never be answered here (its flight was cancelled)."""
        index = OUTCOMES.index("abandoned")
        outcomes = (*self.outcomes[:index], self.outcomes[index] + 1, *self.outcomes[index + 1 :])
        return attrs.evolve(self, outcomes=outcomes)

    def caller_waited(self) -> Tally:
        """One more caller waits on the network."""
        return attrs.evolve(self, waited=self.waited + 1)

    def token_rejected(self) -> Tally:
        """One more token was rejected by the API and dropped."""
        return attrs.evolve(self, rejected=self.rejected + 1)


@attrs.frozen
class Stats:
    """A manager's counts and state at one moment: cheap to take, free of secrets.

    Counts cover the life of the manager's slot, shared by every manager of the process
    with the same credentials (the memory store) or the same store. Times are seconds on
    the manager's monotonic clock. ``minute_spent`` and ``hour_spent`` are this process's
    token requests, ``api_minute_spent`` and ``api_hour_spent`` its API calls (``request()``);
    with a fleet store, ``stats(fleet=True)`` adds the fleet's (two store round trips).
    """

    merchant_id: str
    """Whose token (not a secret; the API key never appears)."""
    base_url: str
    """Where token requests go."""
    at: float
    """Monotonic time the snapshot was taken."""
    token_requests: int
    """Token requests sent or attempted (each ends in one of :attr:`outcomes`)."""
    outcomes: tuple[tuple[str, int], ...]
    """Sent token requests by outcome, ``(name, count)`` in :data:`OUTCOMES` order."""
    rate_limited: int
    """429 answers received from 88Pay."""
    failures_in_row: int
    """Token requests that failed since the last success (0 when the last one succeeded)."""
    waited: int
    """Callers that had no usable token and waited for a token request."""
    rejected_tokens: int
    """Tokens the API rejected with 401 (each such API call was replayed once)."""
    token_remaining: float | None
    """Seconds the current token can still be handed out (0 when spent); None without one."""
    refreshing: bool
    """True while a token request of this slot is in flight."""
    next_request_in: float
    """Seconds until a token request may be sent (a 429's cool-down, a backoff, the limits)."""
    cool_down_remaining: float
    """Seconds left of a 429's cool-down (0 when none holds): 88Pay's ``Retry-After`` (or a
    longer backoff) after it answered 429 to this process, or the cool-down the fleet store
    holds after another process drew one. While it holds no token request is sent, so
    :attr:`minute_remaining` and :attr:`hour_remaining` are 0."""
    minute_spent: int
    """Token requests sent in the rolling short window (60 s; ``Policy.minute_span``)."""
    hour_spent: int
    """Token requests sent in the rolling long window (3600 s; ``Policy.hour_span``)."""
    per_minute: int
    """The per-minute limit kept (88Pay: 10 per merchant)."""
    per_hour: int
    """The per-hour limit kept (88Pay: 100 per merchant)."""
    store_mode: str
    """One of :data:`STORE_MODES`."""
    degraded_since: float | None
    """Monotonic time the fleet store started failing, while it is degraded; else None."""
    fleet_minute_spent: int | None = None
    """The whole fleet's token requests in the rolling short window (the policy's, as
    :attr:`minute_spent`), counted by the fleet store; None unless asked for
    (``stats(fleet=True)``) and the store could tell."""
    fleet_hour_spent: int | None = None
    """The whole fleet's token requests in the rolling hour, as :attr:`fleet_minute_spent`."""
    api_minute_spent: int = 0
    """API calls (``request()`` sends, each reserved with the API governor) this process
    made in the rolling minute (60 s; ``Policy.minute_span``)."""
    api_hour_spent: int = 0
    """API calls this process made in the rolling hour (3600 s; ``Policy.hour_span``)."""
    api_per_minute: int | None = None
    """The API calls allowed per minute (88Pay: 60 per merchant; ``Policy.api_per_minute``);
    None when the policy keeps no such limit."""
    api_per_hour: int | None = None
    """The API calls allowed per hour (88Pay: 1,000; ``Policy.api_per_hour``), or None."""
    api_cool_down_remaining: float = 0.0
    """Seconds left of an API ``429``'s cool-down (0 when none holds): 88Pay's
    ``Retry-After`` after it answered an API call of this process 429, or, with a fleet
    store, the fleet's as this process last read it (another process's 429). While it holds
    no API call is sent, so :attr:`api_minute_remaining` and :attr:`api_hour_remaining`
    are 0."""
    fleet_api_minute_spent: int | None = None
    """The whole fleet's API calls in the rolling minute, counted by the fleet store; None
    unless asked for (``stats(fleet=True)``) and the store could tell."""
    fleet_api_hour_spent: int | None = None
    """The whole fleet's API calls in the rolling hour, as :attr:`fleet_api_minute_spent`."""

    @property
    def budget_scope(self) -> str:
        """``fleet`` when the remaining budget is the fleet's, else ``process``."""
        return "process" if self.fleet_minute_spent is None else "fleet"

    @property
    def minute_remaining(self) -> int:
        """Token requests still allowed in the rolling minute (the fleet's, when known).

        0 while a 429's cool-down holds (:attr:`cool_down_remaining`): 88Pay said the
        merchant's budget is spent, by whomever, and does not say which limit was reached.
        """
        spent = self.minute_spent if self.fleet_minute_spent is None else self.fleet_minute_spent
        return self._left(self.per_minute, spent)

    @property
    def hour_remaining(self) -> int:
        """Token requests still allowed in the rolling hour, as :attr:`minute_remaining`."""
        spent = self.hour_spent if self.fleet_hour_spent is None else self.fleet_hour_spent
        return self._left(self.per_hour, spent)

    def _left(self, limit: int, spent: int) -> int:
        return 0 if self.cool_down_remaining > 0 else max(0, limit - spent)

    @property
    def api_budget_scope(self) -> str:
        """``fleet`` when the remaining API budget is the fleet's, else ``process``."""
        return "process" if self.fleet_api_minute_spent is None else "fleet"

    @property
    def api_minute_remaining(self) -> int | None:
        """API calls still allowed in the rolling minute (the fleet's, when known).

        None without a per-minute API limit; 0 while an API 429's cool-down holds
        (:attr:`api_cool_down_remaining`).
        """
        spent = self.api_minute_spent
        if self.fleet_api_minute_spent is not None:
            spent = self.fleet_api_minute_spent
        return self._api_left(self.api_per_minute, spent)

    @property
    def api_hour_remaining(self) -> int | None:
        """API calls still allowed in the rolling hour, as :attr:`api_minute_remaining`."""
        spent = (
            self.api_hour_spent if self.fleet_api_hour_spent is None else self.fleet_api_hour_spent
        )
        return self._api_left(self.api_per_hour, spent)

    def _api_left(self, limit: int | None, spent: int) -> int | None:
        if limit is None:
            return None
        return 0 if self.api_cool_down_remaining > 0 else max(0, limit - spent)

    def with_fleet_spend(self, minute: int, hour: int) -> Stats:
        """A copy of this snapshot with the fleet's token requests, as a fleet store counted."""
        return attrs.evolve(self, fleet_minute_spent=minute, fleet_hour_spent=hour)

    def with_fleet_api_spend(self, minute: int, hour: int) -> Stats:
        """A copy of this snapshot with the fleet's API calls, as a fleet store counted them."""
        return attrs.evolve(self, fleet_api_minute_spent=minute, fleet_api_hour_spent=hour)

    @property
    def degraded_for(self) -> float | None:
        """Seconds the store has been degraded, or None when it is not."""
        return None if self.degraded_since is None else self.at - self.degraded_since

    def outcome(self, name: str) -> int:
        """The count of outcome ``name`` (one of :data:`OUTCOMES`)."""
        return dict(self.outcomes)[name]

    def summary(self) -> str:
        """One line for people: spend, outcomes, a 429's cool-down, token life, store mode.

        Then the API calls' spend against their limits, and an API 429's cool-down.
        """
        outcomes = ", ".join(f"{count} {name}" for name, count in self.outcomes if count)
        life = "no token" if self.token_remaining is None else f"{self.token_remaining:.0f} s left"
        store = self.store_mode
        if self.degraded_for is not None:
            store += f" for {self.degraded_for:.0f} s"
        plural = "" if self.token_requests == 1 else "s"
        fleet = ""
        if self.fleet_minute_spent is not None:
            fleet = (
                f" (fleet: {self.fleet_minute_spent}/{self.per_minute} this minute, "
                f"{self.fleet_hour_spent}/{self.per_hour} this hour)"
            )
        cooling = ""
        if self.cool_down_remaining > 0:
            cooling = (
                f", 429 cool-down {self.cool_down_remaining:.0f} s left (nothing sent until then)"
            )
        return (
            f"{self.token_requests} token request{plural} ({outcomes or 'none'}), "
            f"{self.minute_spent}/{self.per_minute} this minute, "
            f"{self.hour_spent}/{self.per_hour} this hour{fleet}{cooling}, token {life}, "
            f"store {store}; {self._api_summary()}"
        )

    def _api_summary(self) -> str:
        """The API calls' part of :meth:`summary`."""

        def spend(spent: int, limit: int | None, window: str) -> str:
            return f"{spent}/{'no limit' if limit is None else limit} this {window}"

        line = (
            f"API calls {spend(self.api_minute_spent, self.api_per_minute, 'minute')}, "
            f"{spend(self.api_hour_spent, self.api_per_hour, 'hour')}"
        )
        if self.fleet_api_minute_spent is not None and self.fleet_api_hour_spent is not None:
            line += (
                f" (fleet: {spend(self.fleet_api_minute_spent, self.api_per_minute, 'minute')}, "
                f"{spend(self.fleet_api_hour_spent, self.api_per_hour, 'hour')})"
            )
        if self.api_cool_down_remaining > 0:
            line += (
                f", API 429 cool-down {self.api_cool_down_remaining:.0f} s left "
                "(no API call sent until then)"
            )
        return line

    def as_dict(self) -> dict[str, Any]:
        """The snapshot as JSON-ready data (what ``eightyeightpay token --json`` prints)."""
        data = attrs.asdict(self)
        data["outcomes"] = dict(self.outcomes)
        data["minute_remaining"] = self.minute_remaining
        data["hour_remaining"] = self.hour_remaining
        data["degraded_for"] = self.degraded_for
        data["budget_scope"] = self.budget_scope
        data["api_minute_remaining"] = self.api_minute_remaining
        data["api_hour_remaining"] = self.api_hour_remaining
        data["api_budget_scope"] = self.api_budget_scope
        return data
