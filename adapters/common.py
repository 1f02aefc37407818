"""What every driver does the same way: stepping the core's refresh protocol over a slot.

A driver owns the I/O (blocking, asyncio or trio); :class:`FlightRun` owns the bookkeeping
around it, so the protocol is stepped identically on every runtime: each result goes back
to the core under the slot's lock, a store failure becomes a fault the core degrades on, an
unexpected failure becomes a typed error, an interrupted flight is aborted, and every
waiter is woken exactly once.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

from eightyeightpay.api import (
    ApiCoolDown,
    ApiEffect,
    ApiPermit,
    ApiResponse,
    ForgetApiSend,
    InvalidateToken,
    NeedToken,
    Now,
    ReserveApiCall,
    SendApiRequest,
    WallNow,
    send_left,
)
from eightyeightpay.errors import EightyEightPayError, TransportError
from eightyeightpay.fleet import (
    Done,
    FleetEffect,
    KeepLock,
    ReleaseLock,
    Sleep,
    StoreFault,
    store_call,
    store_result,
)
from eightyeightpay.http import HttpResponse
from eightyeightpay.machine import (
    Effect,
    Exchange,
    Flight,
    Notice,
    Result,
    SendTokenRequest,
    Settled,
    transport_failure,
)
from eightyeightpay.plugins.fleet import (
    DEFAULT_STORE_DEADLINE,
    StoreHealth,
    fault_detail,
    tls_failure,
)
from eightyeightpay.plugins.memory import NO_MEMO, Slot
from eightyeightpay.plugins.process import first_use
from eightyeightpay.ports import AsyncFleetOperations, AsyncRuntime, FleetOperations
from eightyeightpay.stats import outcome_of
from eightyeightpay.tokens import Token
from eightyeightpay.wire import converter

if TYPE_CHECKING:
    from .telemetry import ApiCallTrace, FlightTrace, Observer

__all__ = [
    "CLOSED",
    "ApiCallRun",
    "Closed",
    "FlightRun",
    "acall_store",
    "aperform_api_governor",
    "call_store",
    "drop_flight",
    "perform_api_governor",
    "store_outcome",
]

log = logging.getLogger("eightyeightpay")


class FlightRun:
    """One run of the refresh protocol for ``flight`` on ``slot``.

    Use: ``effect = run.start()``; while ``effect`` is not None, perform it and pass its
    result to ``effect = run.feed(result)`` (:meth:`exchanged`, :meth:`slept`,
    :meth:`perform_store` and :meth:`aperform_store` build results); end with
    :meth:`finish` in a ``finally`` block, which wakes the waiters and returns the outcome.
    """

    def __init__(
        self,
        slot: Slot,
        flight: Flight,
        clock: Callable[[], float],
        host: str,
        health: StoreHealth | None = None,
        observer: Observer | None = None,
        *,
        store_deadline: float = DEFAULT_STORE_DEADLINE,
    ) -> None:
        self._slot = slot
        self._deadline = store_deadline
        self._keeping: Callable[[], None] | None = None
        self._flight = flight
        self._clock = clock
        self._host = host
        self._health = health
        self._steps = slot.machine.refresh(flight)
        self._trace: FlightTrace | None = observer.flight(flight) if observer else None
        self.settled: Settled | None = None
        """The outcome, once the protocol has ended."""

    def start(self) -> Effect | None:
        """The first effect to perform."""
        merchant = self._slot.machine.credentials.merchant_id
        log.debug("refreshing the token of %s at %s", merchant, self._host)
        if self._slot.forked_unshared:
            self._slot.forked_unshared = False
            policy = self._slot.machine.policy
            log.warning(
                "this process was forked from one that used %s with no fleet store: each such "
                "process requests its own tokens (up to %g an hour each while it is called) "
                "against the merchant's %d an hour; with two or more processes calling, give "
                "them a fleet store (store='redis' or 'memcached')",
                merchant,
                policy.max_hourly_cost,
                policy.per_hour,
            )
        first_use(converter)  # cattrs, imported outside the slot's lock and never at a fork
        return self.feed(None)

    def feed(self, result: Result | None) -> Effect | None:
        """Hand an effect's result to the core; returns the next effect, or None when done."""
        effect: Effect | None = None
        with self._slot.lock:
            try:
                effect = self._steps.send(result)  # type: ignore[arg-type]  # None starts it
            except StopIteration as stop:
                self.settled = stop.value
                effect = None
            notices = self._slot.machine.take_notices()
            if self._trace is not None:
                machine = self._slot.machine
                attempt, failure = machine.failures, machine.last_error
        if notices:
            log_notices(notices)
        if self._trace is None:
            return effect
        # Telemetry only (no decision): what the core made of an exchange, and the next send.
        if isinstance(result, Exchange):
            self._trace.exchanged(result.response, result.error, outcome_of(failure))
        if isinstance(effect, SendTokenRequest):
            self._trace.sending(effect, attempt)
        return effect

    def exchanged(
        self, response: HttpResponse | None, error: EightyEightPayError | None
    ) -> Exchange:
        """The result of a token request."""
        return Exchange(response, error, self._clock(), time.time())

    def slept(self) -> Done:
        """The result of a :class:`~eightyeightpay.fleet.Sleep`."""
        return Done(self._clock())

    def perform_store(self, effect: FleetEffect, operations: FleetOperations) -> Result:
        """Perform a store effect with blocking operations, within the store's deadline.

        See :func:`call_store`; a lease to keep is renewed from a thread of its own.
        """
        if isinstance(effect, KeepLock):
            self._keep_lock(effect, operations)
            return Done(self._clock())
        if isinstance(effect, ReleaseLock):
            self._stop_keeping()
        span, started = self._store_started(effect)
        value = call_store(effect, operations, self._deadline)
        return self._stored(effect, value, span, started)

    async def aperform_store(
        self, effect: FleetEffect, operations: AsyncFleetOperations, runtime: AsyncRuntime
    ) -> Result:
        """Perform a store effect with async operations, within the store's deadline.

        See :func:`acall_store`; a lease to keep is renewed from a task of its own.
        """
        if isinstance(effect, KeepLock):
            self._akeep_lock(effect, operations, runtime)
            return Done(self._clock())
        if isinstance(effect, ReleaseLock):
            self._stop_keeping()
        span, started = self._store_started(effect)
        value = await acall_store(effect, operations, runtime, self._deadline)
        return self._stored(effect, value, span, started)

    def _keep_lock(self, effect: KeepLock, operations: FleetOperations) -> None:
        """Renew the lease from a thread of its own until the release or the flight's end."""
        stop = threading.Event()
        self._stop_keeping()
        self._keeping = stop.set

        def renew() -> None:
            while not stop.wait(effect.every):
                try:
                    kept = operations.extend(effect.key, effect.owner, effect.ttl)
                except Exception as error:  # the send goes on; the budget still guards it
                    log.debug("the fleet lock could not be renewed (%s)", fault_detail(error))
                    continue
                if not kept:
                    log.debug("the fleet lock was lost while its request was out")
                    return

        threading.Thread(target=renew, name="eightyeightpay-lease", daemon=True).start()

    def _akeep_lock(
        self, effect: KeepLock, operations: AsyncFleetOperations, runtime: AsyncRuntime
    ) -> None:
        """Renew the lease from a task the manager owns, until the release or the flight's end."""
        stopped = [False]
        self._stop_keeping()

        def stop() -> None:
            stopped[0] = True

        self._keeping = stop

        async def renew() -> None:
            while True:
                await runtime.sleep(effect.every)
                if stopped[0]:
                    return
                try:
                    async with runtime.deadline(self._deadline):
                        kept = await operations.extend(effect.key, effect.owner, effect.ttl)
                except Exception as error:  # the send goes on; the budget still guards it
                    log.debug("the fleet lock could not be renewed (%s)", fault_detail(error))
                    continue
                if not kept:
                    log.debug("the fleet lock was lost while its request was out")
                    return

        runtime.spawn(renew, stop)

    def _stop_keeping(self) -> None:
        keeping, self._keeping = self._keeping, None
        if keeping is not None:
            keeping()

    def _store_started(self, effect: FleetEffect) -> tuple[object, float]:
        if self._trace is None:
            return None, 0.0
        return self._trace.store_started(store_call(effect)[0]), self._clock()

    def _stored(self, effect: FleetEffect, value: object, span: object, started: float) -> Result:
        result = store_outcome(effect, value, self._clock, self._health)
        if self._trace is not None:
            self._trace.store_ended(span, effect, result, started)
        return result

    def crash(self, error: BaseException) -> None:
        """Record an unexpected failure (a broken plugin) as the flight's typed error."""
        with self._slot.lock:
            self.settled = self._slot.machine.fail(
                self._flight, transport_failure(self._host, type(error).__name__), now=self._clock()
            )
            notices = self._slot.machine.take_notices()
        log_notices(notices)

    def finish(self) -> Settled:
        """Wake every waiter; an unfinished run (cancelled, interrupted) is aborted."""
        self._stop_keeping()
        settled = self.settled
        if settled is None:
            with self._slot.lock:
                self._slot.machine.abort(self._flight)
            settled = Settled(self._flight, None, None)
        self._slot.publish(settled)
        if self._trace is not None:
            with self._slot.lock:
                mode = self._slot.machine.stats(self._clock()).store_mode
            self._trace.finish(settled, mode)
        if settled.token is not None:
            log.debug("token %s in use", settled.token.fingerprint)
        elif settled.error is not None:
            log.debug("token refresh failed: %s", type(settled.error).__name__)
        else:
            log.debug("token refresh abandoned before it finished")
        return settled


class _Late(Exception):
    """A store call that did not answer within its deadline (it may still be running)."""

    def __init__(self, deadline: float) -> None:
        super().__init__(f"no answer within the store deadline of {deadline:g} s")


class _BoundedCall:
    """One blocking store call in a daemon thread, so that its caller can stop waiting."""

    def __init__(self, call: Callable[[], object]) -> None:
        self._call = call
        self._done = threading.Event()
        self.outcome: object = None
        """What the call returned, or the exception it raised."""

    def _run(self) -> None:
        try:
            self.outcome = self._call()
        except Exception as error:
            self.outcome = error
        finally:
            self._done.set()

    def finished(self, seconds: float) -> bool:
        """Start the call; True if it ended within ``seconds``."""
        threading.Thread(target=self._run, name="eightyeightpay-store", daemon=True).start()
        return self._done.wait(seconds)


_LEVELS = {"info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def log_notices(notices: tuple[Notice, ...]) -> None:
    """Log what the core asked to be seen (called without the slot's lock)."""
    for notice in notices:
        log.log(_LEVELS.get(notice.level, logging.WARNING), "%s", notice.message)


def call_store(effect: FleetEffect, operations: FleetOperations, deadline: float) -> object:
    """Call the store method that performs ``effect``; what it returned, or what it raised.

    The call runs in a thread of its own and is waited for at most ``deadline`` seconds: a
    call that has not returned by then (a stalled plugin, a hung socket) is a fault and is
    left to finish on its own, so no caller waits on it.
    """
    name, args = store_call(effect)
    call = _BoundedCall(lambda: getattr(operations, name)(*args))
    return call.outcome if call.finished(deadline) else _Late(deadline)


async def acall_store(
    effect: FleetEffect, operations: AsyncFleetOperations, runtime: AsyncRuntime, deadline: float
) -> object:
    """:func:`call_store` for async operations: the call is cancelled at the deadline.

    trio and asyncio abandon a worker thread the call may be blocked in; a call that blocks
    the event loop itself cannot be interrupted by anyone, and a store must not make one.
    """
    name, args = store_call(effect)
    try:
        async with runtime.deadline(deadline):
            return await getattr(operations, name)(*args)
    except TimeoutError:
        return _Late(deadline)
    except Exception as error:  # a store failure degrades; it never reaches a caller
        return error


def store_outcome(
    effect: FleetEffect, value: object, clock: Callable[[], float], health: StoreHealth | None
) -> Result:
    """The core's result for what a store call gave back, noted in the store's health."""
    fix: str | None = None
    if isinstance(value, Exception):
        late = isinstance(value, _Late)
        detail = str(value) if late else fault_detail(value)
        # A TLS failure is a setting to fix, not a failover: no grace of reading again.
        lasting = late or tls_failure(value) is not None
        if not late and health is not None:
            fix = health.misconfiguration(value)
        result: Result = StoreFault(detail, clock(), stalled=lasting, misconfigured=fix is not None)
    else:
        result = store_result(effect, value, clock())
    if health is not None:
        if isinstance(result, StoreFault):
            health.failed(result.detail, fix)
        else:
            health.succeeded()
    return result


def _governor_steps(
    slot: Slot, effect: ReserveApiCall | ApiCoolDown, now: float
) -> Generator[FleetEffect, Result, float]:
    if isinstance(effect, ReserveApiCall):
        return slot.machine.reserve_api(now)
    return slot.machine.api_cool_down(now, effect.seconds)


def _governed(
    slot: Slot, effect: ApiEffect, answer: float, clock: Callable[[], float], counted_at: float
) -> ApiPermit | float:
    if not isinstance(effect, ReserveApiCall):  # a 429's cool-down: its notice
        with slot.lock:
            notices = slot.machine.take_notices()
        log_notices(notices)
        return answer
    if answer <= 0:  # the time the governor counted the send at (its end moves it)
        return ApiPermit(counted_at, answer)
    with slot.lock:
        now = clock()
        cause, scope = slot.machine.api_hold(now)
    return ApiPermit(now, answer, cause, scope)


def perform_api_governor(
    slot: Slot,
    effect: ReserveApiCall | ApiCoolDown,
    clock: Callable[[], float],
    operations: FleetOperations | None,
    deadline: float,
    health: StoreHealth | None,
) -> ApiPermit | float:
    """Perform the API call protocol's governor effects on blocking operations.

    :class:`ReserveApiCall` answers an :class:`ApiPermit`, :class:`ApiCoolDown` the time.
    The core's
    :meth:`~eightyeightpay.machine.TokenMachine.reserve_api` and
    :meth:`~eightyeightpay.machine.TokenMachine.api_cool_down` decide, under the slot's
    lock; with a fleet store they ask for the fleet's API budget and cool-down, which are
    read and written here, outside the lock, each call within the store's ``deadline``.
    """
    machine = slot.machine
    if not machine.fleet and type(effect) is ReserveApiCall:  # nothing to ask: no generator
        with slot.lock:
            now = clock()
            wait = machine.reserve_api_locally(now)
            return ApiPermit(now, wait, *machine.api_hold(now)) if wait > 0 else ApiPermit(now, 0.0)
    with slot.lock:
        steps = _governor_steps(slot, effect, clock())
        step = _step(steps, None)
        counted_at = machine.api_reserved_at
    while not isinstance(step, float):
        assert operations is not None  # only a fleet machine asks for the store
        value = call_store(step, operations, deadline)
        result = store_outcome(step, value, clock, health)
        with slot.lock:
            step = _step(steps, result)
            counted_at = machine.api_reserved_at
    return _governed(slot, effect, step, clock, counted_at)


async def aperform_api_governor(
    slot: Slot,
    effect: ReserveApiCall | ApiCoolDown,
    clock: Callable[[], float],
    operations: AsyncFleetOperations | None,
    deadline: float,
    health: StoreHealth | None,
    runtime: AsyncRuntime,
) -> ApiPermit | float:
    """:func:`perform_api_governor` on async operations."""
    machine = slot.machine
    with slot.lock:
        steps = _governor_steps(slot, effect, clock())
        step = _step(steps, None)
        counted_at = machine.api_reserved_at
    while not isinstance(step, float):
        assert operations is not None
        value = await acall_store(step, operations, runtime, deadline)
        result = store_outcome(step, value, clock, health)
        with slot.lock:
            step = _step(steps, result)
            counted_at = machine.api_reserved_at
    return _governed(slot, effect, step, clock, counted_at)


def _step(
    steps: Generator[FleetEffect, Result, float], result: Result | None
) -> FleetEffect | float:
    try:
        return steps.send(result)  # type: ignore[arg-type]  # None starts it
    except StopIteration as done:
        return float(done.value)


DriverEffect = NeedToken | SendApiRequest | Sleep | ReserveApiCall | ApiCoolDown
"""The API call effects a driver performs itself (the governor's through
:func:`perform_api_governor`); :class:`ApiCallRun` does the rest."""

Governor = Callable[[ReserveApiCall | ApiCoolDown], ApiPermit | float]
"""Performs a governor effect at once (blocking store operations, or none)."""


class ApiCallRun:
    """One ``request()``: the core's API call protocol, stepped alike on every runtime.

    Use: ``while (effect := run.next()) is not None:`` perform ``effect`` (a
    :data:`DriverEffect`) and hand back its result with :meth:`received` (a send's),
    :meth:`give` (any other's) or, for a token that could not be had, :meth:`fail`; then
    return :attr:`response`. An error the protocol ends with propagates from :meth:`next`.

    What needs no waiting is performed here, so that the driver sees only what it must
    await or block on: the time (``clock``), a token the cache holds fresh
    (``fresh_token``; a :class:`~eightyeightpay.api.NeedToken` reaches the driver only when
    it returns None), the governor when ``govern`` is given (a driver whose store calls
    block, or that has no store), a send's end for the governor's window (``ended``, with
    the send's reservation time and whether it left, once :meth:`received` or :meth:`cut`
    hands in its outcome), invalidating the token, and the call's telemetry (its sends, a
    hold by the governor, its end in an error).
    """

    __slots__ = (
        "_clock",
        "_ended",
        "_failure",
        "_fresh_token",
        "_govern",
        "_invalidate",
        "_reserved_at",
        "_result",
        "_span",
        "_steps",
        "_trace",
        "response",
    )

    def __init__(
        self,
        steps: Generator[ApiEffect, Any, ApiResponse],
        invalidate: Callable[[Token], bool],
        trace: ApiCallTrace | None,
        *,
        clock: Callable[[], float],
        fresh_token: Callable[[], Token | None],
        govern: Governor | None,
        ended: Callable[[float, bool], None],
    ) -> None:
        self._steps = steps
        self._invalidate = invalidate
        self._ended = ended
        self._reserved_at = -math.inf
        self._trace = trace
        self._clock = clock
        self._fresh_token = fresh_token
        self._govern = govern
        self._result: Any = None
        self._failure: BaseException | None = None
        self._span: object = None
        self.response: ApiResponse | None = None
        """The call's answer, once :meth:`next` has returned None."""

    def next(self) -> DriverEffect | None:
        """The next effect for the driver to perform, or None when the call has its answer."""
        steps = self._steps
        trace = self._trace
        try:
            if self._failure is not None:
                failure, self._failure = self._failure, None
                effect = steps.throw(failure)
            else:
                effect = steps.send(self._result)
            while True:  # perform here what needs no waiting; hand the driver the rest
                kind = type(effect)
                if kind is SendApiRequest:
                    self._reserved_at = effect.reserved_at  # type: ignore[union-attr]
                    if trace is not None:
                        self._span = trace.sending(effect.request)  # type: ignore[union-attr]
                    return effect  # type: ignore[return-value]
                if kind is Now:
                    effect = steps.send(self._clock())
                elif kind is WallNow:  # after a 429, for a Retry-After date
                    effect = steps.send(time.time())
                elif kind is NeedToken:
                    token = self._fresh_token()
                    if token is None:
                        return effect  # type: ignore[return-value]
                    effect = steps.send(token)
                elif kind is ForgetApiSend:
                    self._ended(effect.reserved_at, False)  # type: ignore[union-attr]
                    effect = steps.send(None)
                elif kind is InvalidateToken:
                    dropped = self._invalidate(effect.token)  # type: ignore[union-attr]
                    if trace is not None:
                        trace.invalidated()
                    effect = steps.send(dropped)
                elif self._govern is not None and (kind is ReserveApiCall or kind is ApiCoolDown):
                    answer = self._govern(effect)  # type: ignore[arg-type]
                    if trace is not None and type(answer) is ApiPermit:
                        trace.governed(answer)
                    effect = steps.send(answer)
                else:
                    return effect  # type: ignore[return-value]
        except StopIteration as done:
            self.response = done.value
            return None
        except BaseException as error:
            if trace is not None:
                trace.ended(error)
            raise

    def give(self, result: object) -> None:
        """The result of the effect :meth:`next` returned last (a send's: :meth:`received`)."""
        if self._trace is not None and isinstance(result, ApiPermit):
            self._trace.governed(result)  # the governor's answer: held back, or not
        self._result = result

    def received(self, response: HttpResponse | TransportError) -> None:
        """What the send :meth:`next` returned last got: a response, or its transport error.

        The API governor learns that the send ended (``ended``): it counts it now.
        """
        if self._trace is not None:
            self._trace.received(self._span, response)
        self._ended(self._reserved_at, send_left(response))
        self._result = response

    def fail(self, error: EightyEightPayError) -> None:
        """The token the last effect asked for could not be had: the core says which failed."""
        self._failure = error

    def cut(self, error: BaseException) -> None:
        """The send :meth:`next` returned last ended without an answer: ``error`` stopped it.

        A cancellation, or the manager closing (its transport raised
        :class:`~eightyeightpay.errors.ManagerClosed`). The API governor counts the send as
        ended now, or forgets it if it provably never left
        (:func:`~eightyeightpay.api.send_left`); then the protocol raises: the cancellation
        as it is, a ``ManagerClosed`` saying what became of the call.
        """
        if self._trace is not None:
            self._trace.received(self._span, error)
        self._ended(self._reserved_at, send_left(error))
        self._failure = error
        effect = self.next()
        raise AssertionError(f"the protocol went on after its send was cut: {effect!r}")


def drop_flight(slot: Slot, flight: Flight) -> None:
    """Abort ``flight`` that will never run (its driver closed) and wake its waiters."""
    with slot.lock:
        slot.machine.abort(flight)
    slot.publish(Settled(flight, None, None))


class Closed:
    """Stands in for a closed manager's slot.

    It has no snapshot and an empty memo, so every call takes the slow path (which raises
    ManagerClosed) and the cached path needs no extra check.
    """

    snapshot = None
    memo = NO_MEMO


CLOSED = Closed()
"""The one :class:`Closed` instance."""
