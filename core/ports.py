"""The ports: what the drivers need from plugins, as typing Protocols (pure types, no I/O).

Plugins implement them (transports, async runtimes and their streams, fleet stores' operations);
the drivers in ``eightyeightpay.adapters`` use them. Declaring them here, in the core, keeps the
layers one-way: ``adapters -> plugins -> core``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from .credentials import CacheKey
from .fleet import BudgetRequest, Purpose, StoredToken
from .http import HttpRequest, HttpResponse
from .machine import Settled

__all__ = [
    "AsyncFleetOperations",
    "AsyncRuntime",
    "AsyncStream",
    "AsyncTransport",
    "FleetOperations",
    "FleetStorePort",
    "Job",
    "Lot",
    "ReadValue",
    "Reserved",
    "Transport",
    "Waiter",
]

Job = Callable[[], Awaitable[None]]
"""A background job an async runtime runs as a task."""


class Transport(Protocol):
    """What the threaded manager needs from an HTTP client.

    ``send`` returns the complete response or raises a
    :class:`~eightyeightpay.errors.TransportError` saying whether the request may have reached
    the server. It never raises anything else for network trouble.
    """

    def send(self, request: HttpRequest, *, timeout: float) -> HttpResponse:
        """Send ``request`` and return the whole response within ``timeout`` seconds."""
        ...

    def close(self) -> None:
        """Release connections. Sending after close is an error."""
        ...


class AsyncTransport(Protocol):
    """What the async managers need from an HTTP client."""

    async def send(self, request: HttpRequest, *, timeout: float) -> HttpResponse:
        """Send ``request``; return the whole response or raise a TransportError."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


ReadValue = tuple[bytes | StoredToken | None, float, float]
"""A read: the stored token (raw bytes or decoded), its TTL and the cool-down left, seconds."""
Reserved = tuple[float, str]
"""A reservation's answer: the wait in seconds (0: recorded) and the budget's epoch."""


class FleetOperations(Protocol):
    """The blocking operations on a shared store (threads; trio runs them off the loop).

    Every method is required; the contract suite (``StoreContract``, see
    ``docs/store-plugin.md``) checks each one. A
    method raises whatever its client raises when the store fails: the manager counts it as
    an outage (degraded mode), never as a caller's error.
    """

    def read(self, key: CacheKey) -> ReadValue:
        """The token with its remaining TTL and the cool-down left, read atomically."""
        ...

    def acquire(self, key: CacheKey, owner: str, ttl: float) -> bool:
        """Take the lock for ``owner`` unless someone holds it; it expires after ``ttl``."""
        ...

    def extend(self, key: CacheKey, owner: str, ttl: float) -> bool:
        """Renew the lock's lease to ``ttl`` seconds from now if ``owner`` still holds it."""
        ...

    def reserve(self, key: CacheKey, request: BudgetRequest) -> Reserved:
        """Record a send in ``request.purpose``'s budget if both windows allow it.

        Answers ``(wait, epoch)``. The windows span ``request.minute_span`` and
        ``request.hour_span`` seconds by the store's clock (60 and 3600 unless a policy is
        compressed); the ``"token"`` and ``"api"`` budgets are kept apart. A budget the
        store does not hold (new, or lost in a restart) gets a new random epoch. When
        ``request.epoch`` is not the budget's, record nothing and answer ``(0, epoch)``;
        otherwise record the ``request.backfill`` sends (the store's now minus each age)
        first, then one send now and answer ``(0, epoch)``, or answer the seconds until a
        send would be allowed. :class:`~eightyeightpay.fleet.StoreBudget` does this
        arithmetic for a store that keeps the budget as one value. A store that cannot tell
        a lost budget may answer the epoch ``""`` always: nothing is then backfilled.
        """
        ...

    def join(self, key: CacheKey, member: str, ttl: float) -> int:
        """Register ``member`` (one process) for ``ttl`` seconds; how many members are live.

        Degraded mode keeps each process to ``1/count`` of 88Pay's limits.
        """
        ...

    def spent(
        self, key: CacheKey, purpose: Purpose, minute_span: float, hour_span: float
    ) -> tuple[int, int]:
        """The fleet's sends of ``purpose`` in the last ``minute_span`` and ``hour_span`` s.

        Read only, by the store's clock; the windows are the policy's (shorter when it is
        compressed). ``stats(fleet=True)`` shows them.
        """
        ...

    def write(self, key: CacheKey, token: StoredToken, ttl: float) -> None:
        """Store ``token`` for ``ttl`` seconds."""
        ...

    def cool_down(self, key: CacheKey, seconds: float) -> None:
        """Start the fleet's cool-down."""
        ...

    def release(self, key: CacheKey, owner: str) -> None:
        """Release the lock only if ``owner`` still holds it."""
        ...


class AsyncFleetOperations(Protocol):
    """The same operations for asyncio."""

    async def read(self, key: CacheKey) -> ReadValue:
        """See :meth:`FleetOperations.read`."""
        ...

    async def acquire(self, key: CacheKey, owner: str, ttl: float) -> bool:
        """See :meth:`FleetOperations.acquire`."""
        ...

    async def extend(self, key: CacheKey, owner: str, ttl: float) -> bool:
        """See :meth:`FleetOperations.extend`."""
        ...

    async def reserve(self, key: CacheKey, request: BudgetRequest) -> Reserved:
        """See :meth:`FleetOperations.reserve`."""
        ...

    async def join(self, key: CacheKey, member: str, ttl: float) -> int:
        """See :meth:`FleetOperations.join`."""
        ...

    async def spent(
        self, key: CacheKey, purpose: Purpose, minute_span: float, hour_span: float
    ) -> tuple[int, int]:
        """See :meth:`FleetOperations.spent`."""
        ...

    async def write(self, key: CacheKey, token: StoredToken, ttl: float) -> None:
        """See :meth:`FleetOperations.write`."""
        ...

    async def cool_down(self, key: CacheKey, seconds: float) -> None:
        """See :meth:`FleetOperations.cool_down`."""
        ...

    async def release(self, key: CacheKey, owner: str) -> None:
        """See :meth:`FleetOperations.release`."""
        ...


class FleetStorePort(Protocol):
    """A fleet store as a runtime sees it: where its blocking and asyncio operations come from."""

    def operations(self) -> FleetOperations:
        """The blocking operations (threads; trio runs them in worker threads)."""
        ...

    def async_operations(self) -> AsyncFleetOperations:
        """The asyncio operations."""
        ...


class AsyncStream(Protocol):
    """A connected byte stream (TCP, possibly TLS)."""

    async def send_all(self, data: bytes) -> None:
        """Send every byte of ``data``."""
        ...

    async def receive_some(self, max_bytes: int) -> bytes:
        """Receive up to ``max_bytes``; ``b""`` at end of stream."""
        ...

    async def aclose(self) -> None:
        """Close the stream; never raises."""
        ...

    def is_stale(self) -> bool:
        """True if an idle kept-alive stream can no longer carry a request.

        The peer closed it, or sent something nobody asked for: a request written to it
        would never be answered. Checked without blocking, before anything is sent.
        """
        ...


class Lot(Protocol):
    """Tasks of one loop parked until another task lets one of them go."""

    async def park(self) -> None:
        """Wait until :meth:`unpark` picks this task (cancellable)."""
        ...

    def unpark(self) -> None:
        """Wake the longest-parked task, if any."""
        ...


class Waiter(Protocol):
    """One caller waiting for one flight."""

    def __call__(self, settled: Settled) -> None:
        """Wake the caller; safe from any thread."""
        ...

    async def wait(self, timeout: float) -> Settled | None:
        """The flight's outcome, or None after ``timeout`` seconds."""
        ...


class AsyncRuntime(Protocol):
    """An event loop's primitives, as the async drivers use them."""

    name: str
    """``"asyncio"`` or ``"trio"``."""
    broken_stream_errors: tuple[type[BaseException], ...]
    """Errors a stream raises when the peer goes away."""

    def waiter(self) -> Waiter:
        """A new waiter bound to the running loop."""
        ...

    def loop_key(self) -> object:
        """The running loop's identity (weakly referenceable): state bound to it is kept by it."""
        ...

    def lot(self) -> Lot:
        """A new :class:`Lot` on the running loop."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Sleep ``seconds``."""
        ...

    def deadline(self, seconds: float) -> contextlib.AbstractAsyncContextManager[object]:
        """A scope that raises :class:`TimeoutError` once ``seconds`` have passed."""
        ...

    async def connect(self, host: str, port: int, tls: Any) -> AsyncStream:
        """Open a TCP stream, with a completed TLS handshake when ``tls`` is given.

        ``tls`` is an ``ssl.SSLContext`` or None (plain TCP); the core names no TLS type, so
        that importing it never loads ``ssl``.
        """
        ...

    def spawn(self, job: Job, on_drop: Callable[[], None]) -> None:
        """Run ``job`` as a task the manager owns.

        If it will never start (the runtime is closed, or the task is cancelled before its
        first step), ``on_drop`` is called instead, so no flight is left open.
        """
        ...

    async def aclose(self) -> None:
        """Cancel every task spawned and wait until they have ended."""
        ...

    def fleet_operations(self, store: FleetStorePort) -> AsyncFleetOperations:
        """The store's operations as this runtime runs them."""
        ...
