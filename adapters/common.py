"""What every driver does the same way: stepping the core's refresh protocol over a slot.

A driver owns the I/O (blocking, asyncio or trio); :class:`FlightRun` owns the bookkeeping
around it, so the protocol is stepped identically on every runtime: each result goes back
to the core under the slot's lock, an unexpected failure becomes a typed error, an
interrupted flight is aborted, and every waiter is woken exactly once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from eightyeightpay.errors import EightyEightPayError
from eightyeightpay.http import HttpResponse
from eightyeightpay.machine import Exchange, Flight, SendTokenRequest, Settled, transport_failure
from eightyeightpay.plugins.memory import Slot

__all__ = ["CLOSED", "Closed", "FlightRun", "drop_flight"]

log = logging.getLogger("eightyeightpay")


class FlightRun:
    """One run of the refresh protocol for ``flight`` on ``slot``.

    Use: ``effect = run.start()``; while ``effect`` is a :class:`SendTokenRequest`, perform
    it and call ``effect = run.feed(response, error)``; the run ends with :meth:`finish`,
    called in a ``finally`` block, which wakes the waiters and returns the outcome.
    """

    def __init__(self, slot: Slot, flight: Flight, clock: Callable[[], float], host: str) -> None:
        self._slot = slot
        self._flight = flight
        self._clock = clock
        self._host = host
        self._steps = slot.machine.refresh(flight)
        self.settled: Settled | None = None
        """The outcome, once the protocol has ended."""

    def start(self) -> SendTokenRequest | None:
        """The first effect to perform."""
        with self._slot.lock:
            effect = next(self._steps)
        log.debug(
            "token request to %s for %s", self._host, self._slot.machine.credentials.merchant_id
        )
        return effect

    def feed(
        self, response: HttpResponse | None, error: EightyEightPayError | None
    ) -> SendTokenRequest | None:
        """Hand the effect's result to the core; returns the next effect, or None when done."""
        with self._slot.lock:
            try:
                return self._steps.send(Exchange(response, error, self._clock()))
            except StopIteration as stop:
                self.settled = stop.value
                return None

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
        if settled.token is not None:
            log.debug("new token %s obtained", settled.token.fingerprint)
        elif settled.error is not None:
            log.debug("token request failed: %s", type(settled.error).__name__)
        else:
            log.debug("token request abandoned before it finished")
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
