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
from .fleet import StoredToken
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


class FleetOperations(Protocol):
    """The blocking operations on a shared store (threads; trio runs them off the loop).

    Optionally, a store also has ``join(key, member, ttl) -> int``: register ``member`` (one
    process) for ``ttl`` seconds and answer how many members are live. Degraded mode keeps
    each process to ``1/count`` of 88Pay's limits; without ``join`` the count stays 1 (the
    whole budget per process). It is not a member of this protocol, so that stores written
    before it still type-check; the shipped stores have it, and so do the async wrappers.
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

    def reserve(self, key: CacheKey, per_minute: int, per_hour: int) -> float:
        """Record a send if both windows allow it (0), else seconds until one would.

        The windows span 60 and 3600 s by the store's clock. Optionally, a store also takes
        ``minute_span`` and ``hour_span`` (seconds, after ``per_hour``): a
        :meth:`~eightyeightpay.policy.Policy.compressed` policy passes its shorter windows that way,
        and only such a policy does (the shipped stores take them; a store that does not
        fails that call, and each process then keeps its own windows).
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

    async def reserve(self, key: CacheKey, per_minute: int, per_hour: int) -> float:
        """See :meth:`FleetOperations.reserve`."""
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
