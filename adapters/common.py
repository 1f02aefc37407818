"""What every driver does the same way: stepping the core's refresh protocol over a slot.

A driver owns the I/O (blocking, asyncio or trio); :class:`FlightRun` owns the bookkeeping
around it, so the protocol is stepped identically on every runtime: each result goes back
to the core under the slot's lock, a store failure becomes a fault the core degrades on, an
unexpected failure becomes a typed error, an interrupted flight is aborted, and every
waiter is woken exactly once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from eightyeightpay.errors import EightyEightPayError
from eightyeightpay.fleet import Done, FleetEffect, StoreFault, store_call, store_result
from eightyeightpay.http import HttpResponse
from eightyeightpay.machine import (
    Effect,
    Exchange,
    Flight,
    Result,
    SendTokenRequest,
    Settled,
    transport_failure,
)
from eightyeightpay.plugins.fleet import StoreHealth
from eightyeightpay.plugins.memory import Slot
from eightyeightpay.ports import AsyncFleetOperations, FleetOperations
from eightyeightpay.stats import outcome_of

if TYPE_CHECKING:
    from .telemetry import FlightTrace, Observer

__all__ = ["CLOSED", "Closed", "FlightRun", "drop_flight"]

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
    ) -> None:
        self._slot = slot
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
        return self.feed(None)

    def feed(self, result: Result | None) -> Effect | None:
        """Hand an effect's result to the core; returns the next effect, or None when done."""
        with self._slot.lock:
            try:
                effect = self._steps.send(result)  # type: ignore[arg-type]  # None starts it
            except StopIteration as stop:
                self.settled = stop.value
                effect = None
            if self._trace is None:
                return effect
            machine = self._slot.machine
            attempt, failure = machine.failures, machine.last_error
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
        """Perform a store effect with blocking operations."""
        name, args = store_call(effect)
        span, started = self._store_started(name)
        try:
            value = getattr(operations, name)(*args)
        except Exception as error:  # a store failure degrades; it never reaches a caller
            value = error
        return self._stored(effect, value, span, started)

    async def aperform_store(self, effect: FleetEffect, operations: AsyncFleetOperations) -> Result:
        """Perform a store effect with async operations."""
        name, args = store_call(effect)
        span, started = self._store_started(name)
        try:
            value = await getattr(operations, name)(*args)
        except Exception as error:  # a store failure degrades; it never reaches a caller
            value = error
        return self._stored(effect, value, span, started)

    def _store_started(self, name: str) -> tuple[object, float]:
        if self._trace is None:
            return None, 0.0
        return self._trace.store_started(name), self._clock()

    def _stored(self, effect: FleetEffect, value: object, span: object, started: float) -> Result:
        if isinstance(value, Exception):
            result: Result = StoreFault(type(value).__name__, self._clock())
        else:
            result = store_result(effect, value, self._clock())
        if self._trace is not None:
            self._trace.store_ended(span, effect, result, started)
        if self._health is not None:
            if isinstance(result, StoreFault):
                self._health.failed(result.detail)
            else:
                self._health.succeeded()
        return result

    def crash(self, error: BaseException) -> None:
        """Record an unexpected failure (a broken plugin) as the flight's typed error."""
        with self._slot.lock:
            self.settled = self._slot.machine.fail(
                self._flight, transport_failure(self._host, type(error).__name__), now=self._clock()
            )

    def finish(self) -> Settled:
        """Wake every waiter; an unfinished run (cancelled, interrupted) is aborted."""
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


def drop_flight(slot: Slot, flight: Flight) -> None:
    """Abort ``flight`` that will never run (its driver closed) and wake its waiters."""
    with slot.lock:
        slot.machine.abort(flight)
    slot.publish(Settled(flight, None, None))


class Closed:
    """Stands in for a closed manager's slot.

    It has no snapshot, so every call takes the slow path (which raises ManagerClosed) and
    the cached path needs no extra check.
    """

    snapshot = None


CLOSED = Closed()
"""The one :class:`Closed` instance."""
