"""What every manager shares, whatever its runtime: configuration, the slot, invalidation."""

from __future__ import annotations

import logging
import random
import sys
import warnings
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Self

from eightyeightpay.api import ApiCoolDown, ApiPermit, ReserveApiCall, api_call
from eightyeightpay.credentials import Credentials
from eightyeightpay.errors import ConfigurationError, ManagerClosed, NotPicklable
from eightyeightpay.fleet import API_BUDGET, TOKEN_BUDGET
from eightyeightpay.plugins.fleet import DEFAULT_STORE_DEADLINE, FleetStore, StoreHealth
from eightyeightpay.plugins.memory import MemoryStore, Slot
from eightyeightpay.plugins.registry import Registry, registry
from eightyeightpay.policy import Policy, Rng, call_deadline
from eightyeightpay.ports import FleetOperations
from eightyeightpay.stats import Stats
from eightyeightpay.tokens import Token

from .common import CLOSED, ApiCallRun, Closed, perform_api_governor
from .config import build_credentials, read_environment
from .lifecycle import EnvRecipe, cache_clock, default_clock, not_picklable

if TYPE_CHECKING:
    from .telemetry import Observer, Telemetry

__all__ = ["EnvConstructible", "ManagerBase", "transport_options"]

log = logging.getLogger("eightyeightpay")


class ManagerBase:
    """Configuration and shared state of a manager; the runtime-specific driver subclasses it.

    A manager garbage-collected without being closed releases what it holds (its share of
    the refresh thread, its connections) and warns with ``ResourceWarning``, as an unclosed
    file does. Pickling: see :meth:`__reduce__`.
    """

    _recipe: EnvRecipe | NotPicklable | None = None

    credentials: Credentials
    """Whose tokens this manager gets (the key shows masked)."""
    policy: Policy
    """Refresh windows, limits and backoff."""
    timeout: float
    """Seconds an API call made by ``request()`` may take."""
    _blocking_fleet: FleetOperations | None = None
    """The fleet store's blocking operations (the threaded manager's), or None."""
    _governs_at_once: bool = True
    """Whether ``request()``'s governor effects are performed without awaiting (by
    :meth:`_govern`): always for the threaded manager, without a fleet store for the others."""

    def _configure(
        self,
        api_key: str,
        merchant_id: str,
        *,
        environment: str | None,
        base_url: str | None,
        store: str | MemoryStore | FleetStore,
        policy: Policy | None,
        allow_http_loopback: bool,
        timeout: float,
        clock: Callable[[], float],
        rng: Rng | None,
        telemetry: Telemetry | None = None,
    ) -> tuple[Registry, FleetStore | None]:
        """Set up everything but the runtime's I/O; returns the plugins and the fleet store."""
        self.credentials = build_credentials(
            api_key,
            merchant_id,
            environment=environment,
            base_url=base_url,
            allow_http_loopback=allow_http_loopback,
        )
        if policy is None:
            policy = Policy()
        elif not isinstance(policy, Policy):  # a dict of its fields, say
            raise ConfigurationError(
                f"policy= must be an eightyeightpay.Policy (for example "
                f"Policy(api_per_minute=120)), not a {type(policy).__name__}."
            )
        self.policy = policy
        if not timeout > 0:  # also refuses NaN
            raise ConfigurationError(
                f"timeout={timeout!r} must be a positive number of seconds (an API call's limit)."
            )
        self.timeout = timeout
        plugins = registry()
        chosen = plugins.store(store)() if isinstance(store, str) else store
        self._slot: Slot = chosen.slot(self.credentials, self.policy, rng or random.Random())
        self._cache: Slot | Closed = self._slot  # what the lock-free paths read
        fleet = chosen if isinstance(chosen, FleetStore) else None
        self._health: StoreHealth | None = fleet.health if fleet else None
        self._fleet_store = fleet
        self._store_deadline = float(getattr(fleet, "deadline", DEFAULT_STORE_DEADLINE))
        self._clock = clock
        self._cache_clock = cache_clock(clock)
        self._closed = False
        store_name = getattr(chosen, "name", type(chosen).__name__)
        self._observer: Observer | None = (
            telemetry.observer(self, store_name) if telemetry is not None else None
        )
        self._process_state = (self._slot, fleet)
        return plugins, fleet

    @property
    def clock(self) -> Callable[[], float]:
        """The clock token lifetimes are measured on (seconds; ``default_clock`` unless given)."""
        return self._clock

    def _check_process(self) -> None:
        """On the slow path: start afresh if the fork hook did not run (a pid check)."""
        slot, fleet = self._process_state
        slot.check_process()
        if fleet is not None:
            fleet.check_process()

    def _release(self) -> None:
        """Give back, without waiting on an event loop, what the manager holds (on GC)."""

    def __del__(self) -> None:
        if getattr(self, "_closed", True) or not hasattr(self, "_transport"):
            return  # closed, or its constructor failed (the transport is built last)
        if sys.is_finalizing():
            return  # the process is ending: its threads and sockets end with it, unwaited
        self._mark_closed()
        try:
            self._release()
        finally:
            warnings.warn(
                f"{type(self).__name__} for {self.credentials.merchant_id} was never closed; "
                "use it as a context manager or call close()/aclose()",
                ResourceWarning,
                source=self,
                stacklevel=2,
            )

    def __reduce__(self) -> tuple[Any, ...]:
        """A ``from_env()`` manager pickles as its recipe; any other refuses (NotPicklable).

        The bytes never hold the key or a token: loading calls ``from_env()`` again, with
        the same options, in the loading process's environment.
        """
        recipe = self._recipe
        if isinstance(recipe, EnvRecipe):
            return (_rebuild_from_env, (type(self), recipe.options))
        raise recipe if isinstance(recipe, NotPicklable) else not_picklable(type(self).__name__)

    def _mark_closed(self) -> bool:
        """Close the cached path; False if the manager was closed already."""
        if self._closed:
            return False
        self._closed = True
        self._cache = CLOSED
        self._slot.leave(self._membership)
        return True

    def _join_slot(self) -> None:
        """Become one of the slot's managers: the last step of construction (it may fail).

        Raises ConfigurationError when the slot's managers are on another clock.
        """
        label = "the default clock" if self._clock is default_clock else _clock_label(self._clock)
        self._membership = self._slot.join(self._clock, label, self.credentials)

    def stats(self, *, fleet: bool = False) -> Stats:
        """The manager's counts and state now: a frozen value, free of secrets.

        Token requests and their outcomes, 429s received, failures in a row, callers that
        waited, the current token's remaining usable life, the rolling minute's and hour's
        spend against the limits and the store's mode; the API calls' spend against the API
        limits and an API 429's cool-down (see :class:`~eightyeightpay.Stats`). Takes the
        slot's lock for a few attribute reads; it does no I/O.

        ``fleet=True`` with a fleet store also asks the store for the whole fleet's spend of
        token requests and of API calls: two blocking round trips (from async code, call it
        in a worker thread). A store that is down, or cannot count, leaves the fleet figures
        None; nothing is raised.
        """
        with self._slot.lock:
            stats = self._slot.machine.stats(self._clock())
        if not fleet or self._fleet_store is None:
            return stats
        policy, operations = self.policy, self._fleet_store.operations()
        key = self.credentials.cache_key
        try:
            minute, hour = operations.spent(key, TOKEN_BUDGET, policy.minute_span, policy.hour_span)
            stats = stats.with_fleet_spend(int(minute), int(hour))
            minute, hour = operations.spent(key, API_BUDGET, policy.minute_span, policy.hour_span)
            stats = stats.with_fleet_api_spend(int(minute), int(hour))
        except Exception as error:  # the store is down or cannot count: local figures stand
            log.debug("the fleet's spend is unknown (%s)", type(error).__name__)
        return stats

    def _api_call(
        self,
        method: str,
        path: str,
        json: Any,
        headers: Mapping[str, str] | None,
        deadline: float | None,
    ) -> ApiCallRun:
        """The core's protocol for one ``request()``, its deadline counted from now.

        Raises ManagerClosed when the manager is closed.
        """
        if self._closed:
            raise ManagerClosed()
        steps = api_call(
            self.credentials.base_url,
            method,
            path,
            json=json,
            headers=headers,
            until=call_deadline(self.policy, self._clock(), deadline),
            policy=self.policy,
            rng=self._slot.machine.rng,
            timeout=self.timeout,
        )
        trace = self._observer.api_call(method, path) if self._observer is not None else None
        return ApiCallRun(
            steps,
            self.invalidate,
            trace,
            clock=self._clock,
            fresh_token=self._fresh_token,
            govern=self._govern if self._governs_at_once else None,
            ended=self._api_send_ended,
        )

    def _fresh_token(self) -> Token | None:
        """The cached token while it is fresh, else None (the slow path decides then)."""
        token = self._cache.snapshot
        if token is not None and self._clock() < token.fresh_until:
            return token
        return None

    def _api_send_ended(self, reserved_at: float, left: bool) -> None:
        """A send of ``request()`` reserved at ``reserved_at`` ended: counted now.

        The governor forgets it instead if it never ``left``.
        """
        slot = self._slot
        if slot.machine.api_window.sends:  # else nothing is counted (no API limits kept)
            with slot.lock:
                slot.machine.api_send_ended(reserved_at, self._clock(), left=left)

    def _govern(self, effect: ReserveApiCall | ApiCoolDown) -> ApiPermit | float:
        """Perform an API governor effect of ``request()`` on blocking store operations.

        The threaded manager's store operations block; a manager without a fleet store
        has none to call: the governor then decides at once, with nothing to read or write.
        """
        return perform_api_governor(
            self._slot,
            effect,
            self._clock,
            self._blocking_fleet,
            self._store_deadline,
            self._health,
        )

    def invalidate(self, token: Token) -> bool:
        """Stop using ``token`` (the API rejected it). A newer token is never dropped."""
        with self._slot.lock:
            dropped = self._slot.machine.invalidate(token)
            self._slot.refresh_snapshot()
        if dropped:
            log.debug("token %s invalidated after a 401", token.fingerprint)
        return dropped

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"{type(self).__name__}({self.credentials}, {state})"


class EnvConstructible:
    """``from_env()`` for managers built as ``cls(api_key, merchant_id, **options)``."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **options: Any) -> Self:
        """A manager configured from the ``EIGHTY_EIGHT_PAY_*`` variables.

        Values are trimmed of stray whitespace (a warning names the variable).
        """
        config = read_environment(environ)
        if environ is None:
            recipe = EnvRecipe.of(options, cls.__name__)
        else:
            recipe = NotPicklable(
                f"This {cls.__name__} was built from an explicit mapping, which pickling "
                "would have to carry (with the key). Build it with from_env() and no mapping "
                "to pickle it as 'read the environment again'."
            )
        config.apply(options)
        manager = cls(config.api_key, config.merchant_id, **options)  # type: ignore[call-arg]
        manager._recipe = recipe  # type: ignore[attr-defined]
        return manager


def _rebuild_from_env(cls: type[EnvConstructible], options: tuple[tuple[str, Any], ...]) -> Any:
    """Unpickle a ``from_env()`` manager: build it again from this process's environment."""
    return cls.from_env(**dict(options))


def transport_options(transport: object, max_connections: int | None) -> dict[str, int]:
    """The built-in transport's options from a manager's ``max_connections=``.

    Raises ConfigurationError when ``max_connections`` is given with a ``transport`` of the
    caller's own: the cap belongs to that transport then.
    """
    if max_connections is None:
        return {}
    if transport is not None:
        raise ConfigurationError(
            "max_connections= sets the cap of the built-in transport; with transport= given, "
            "set the cap on that transport instead."
        )
    return {"max_connections": max_connections}


def _clock_label(clock: Callable[[], float]) -> str:
    """A clock's name for an error message: its function's or its class's, never its value."""
    name = getattr(clock, "__qualname__", None)
    return f"clock={name if isinstance(name, str) else type(clock).__qualname__}"
