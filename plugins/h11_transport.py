"""The ``h11`` async transport: HTTP/1.1 over h11, for asyncio and trio alike.

Real non-blocking I/O on the runtime's own streams, TLS through :mod:`ssl` with the same
trust rules as the threaded manager, one deadline per exchange, and keep-alive reuse. Every
failure becomes a library error saying whether the request may have reached the server.

Connections are pooled per event loop and origin and shared by every transport of the
process on that loop, with a cap on those open (in use and idle); a loop's pools are closed
when the loop ends (``asyncio.run`` and trio finalize async generators, and a pool keeps
one). A forked child starts with no pool: the parent's streams are never used there.
"""

from __future__ import annotations

import collections
import contextlib
import time
import weakref
from collections.abc import AsyncGenerator, Callable
from typing import Any
from urllib.parse import urlsplit

import attrs
import h11

from eightyeightpay.errors import (
    ConnectError,
    ConnectionLost,
    EightyEightPayError,
    ManagerClosed,
    RequestTimeout,
    TLSError,
    note_not_sent,
)
from eightyeightpay.http import Headers, HttpRequest, HttpResponse, response_of
from eightyeightpay.ports import AsyncRuntime, AsyncStream, Lot

from .hookspecs import TransportFactory, hookimpl
from .process import OnEachChild
from .tls import (
    DEFAULT_MAX_CONNECTIONS,
    IDLE_REUSE_SECONDS,
    MAX_BODY_BYTES,
    QUEUE_SHARE,
    PoolStats,
    QueueOrder,
    TrustKey,
    body_too_large,
    connection_cap,
    shared_tls_context,
    tls_failure,
    trust_key,
)

__all__ = ["AsyncHttp11Transport"]

RECEIVE_CHUNK = 65536


@attrs.frozen
class _Origin:
    scheme: str
    host: str
    port: int

    @property
    def netloc(self) -> str:
        return f"{self.host}:{self.port}"


PoolKey = tuple[_Origin, TrustKey]


class _CheckedHeaders:
    """h11's checked form of the header lists sent lately, by host and header pairs.

    h11 validates every header name and value of every request it sends (two regular
    expressions each), which costs more than the rest of the transport's own work on a call;
    a manager sends the same headers on every call while its token lasts. An h11
    ``Request``'s headers, passed to the next ``Request``, are taken as they are. The
    entries hold a token, like the manager's own cache, and are dropped on close.
    """

    __slots__ = ("_recent",)

    LIMIT = 8

    def __init__(self) -> None:
        self._recent: dict[tuple[str, Headers], Any] = {}

    def of(self, host_header: str, headers: Headers) -> Any:
        """Headers for an h11 ``Request`` to ``host_header``: the pairs, then checked once."""
        key = (host_header, headers)
        checked = self._recent.get(key)
        if checked is None:
            if len(self._recent) >= self.LIMIT:  # a new token, or bodies of many lengths
                self._recent.clear()
            pairs = [("Host", host_header), *headers]
            checked = h11.Request(method="GET", target="/", headers=pairs).headers
            self._recent[key] = checked
        return checked

    def clear(self) -> None:
        """Drop every entry (and the tokens in them)."""
        self._recent.clear()


class _Connection:
    def __init__(self, stream: AsyncStream) -> None:
        self.stream = stream
        self.protocol = h11.Connection(our_role=h11.CLIENT, max_incomplete_event_size=65536)
        self.idle_since = time.monotonic()

    async def exchange(self, request: HttpRequest, headers: Any) -> HttpResponse:
        """Send ``request`` with ``headers`` (from :class:`_CheckedHeaders`); read the answer."""
        target = request.path.encode()
        data = (
            self.protocol.send(h11.Request(method=request.method, target=target, headers=headers))
            or b""
        )
        if request.body:
            data += self.protocol.send(h11.Data(data=request.body)) or b""
        data += self.protocol.send(h11.EndOfMessage()) or b""
        await self.stream.send_all(data)
        status = 0
        response_headers: list[tuple[str, str]] = []
        body = bytearray()
        while True:
            event = self.protocol.next_event()
            if event is h11.NEED_DATA:
                self.protocol.receive_data(await self.stream.receive_some(RECEIVE_CHUNK))
            elif isinstance(event, h11.Response):
                status = event.status_code
                response_headers = [  # raw_items() is a list: iterating Headers is slower
                    (k.decode("latin-1").lower(), v.decode("latin-1"))
                    for k, v in event.headers.raw_items()
                ]
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_BODY_BYTES:
                    raise body_too_large(status)
            elif isinstance(event, h11.EndOfMessage):
                return response_of(status, tuple(response_headers), bytes(body))
            elif isinstance(event, h11.ConnectionClosed):
                raise h11.RemoteProtocolError("connection closed before the response ended")

    def reusable(self) -> bool:
        if self.protocol.our_state is h11.DONE and self.protocol.their_state is h11.DONE:
            self.protocol.start_next_cycle()
            self.idle_since = time.monotonic()
            return True
        return False


class _NoConnectionFree(TimeoutError):
    """A caller's patience ran out in a pool's queue: no connection came free (nothing sent)."""


class _Turn:
    """A caller queued for a connection, parked on a lot of its own until handed one."""

    __slots__ = ("connection", "granted", "lot")

    def __init__(self, lot: Lot) -> None:
        self.lot = lot
        self.granted = False
        self.connection: _Connection | None = None


class _Pool(QueueOrder):
    """The connections of one event loop to one origin: at most ``cap`` open at once.

    A connection given back while callers queue is handed to the one that queued first,
    with no round through the idle list: the task giving it back runs on and would
    otherwise take it again for its next call before the woken caller ran, which then
    queued anew at the back (1,000 tasks on 10 connections starved some past their
    deadline).
    """

    def __init__(self, key: PoolKey, cap: int) -> None:
        self.key = key
        self.cap = cap
        self.idle: list[_Connection] = []
        self.turns = collections.deque()
        self.open = 0
        self.opened = 0
        self.queued = 0
        self.users = 0
        self.closed = False

    async def acquire(self, runtime: AsyncRuntime, patience: float) -> _Connection | None:
        """A live idle connection, or None: the caller may open one (its place is reserved).

        Beyond the cap, queues until a connection is handed over, for ``patience`` seconds
        at most (then TimeoutError: nothing was sent). An idle connection the peer has
        closed (or written to unasked) is dropped before anything is sent on it, and the
        next one is tried.
        """
        while self.idle:
            connection = self.idle.pop()
            fresh = time.monotonic() - connection.idle_since < IDLE_REUSE_SECONDS
            if fresh and not connection.stream.is_stale():
                return connection
            self.open -= 1
            await _discard(connection)
        if self.open < self.cap:
            self.open += 1
            self.opened += 1
            return None
        turn = _Turn(runtime.lot())
        self.turns.append(turn)
        self.queued += 1
        try:
            async with runtime.deadline(patience):
                await turn.lot.park()
        except BaseException as error:
            if turn.granted:  # handed over as it was cancelled or timed out: pass it on
                await self.release(turn.connection, keep=turn.connection is not None)
                raise
            self.turns.remove(turn)
            if isinstance(error, TimeoutError):
                raise _NoConnectionFree() from None
            raise
        return turn.connection

    async def release(self, connection: _Connection | None, *, keep: bool) -> None:
        """Give back a connection (None: one that could not be opened)."""
        if keep and connection is not None and not self.closed:
            if self.turns:
                self._hand(connection)
            else:
                self.idle.append(connection)
            return
        if self.turns:  # its place goes to the first in the queue, who opens a new one
            self.opened += 1
            self._hand(None)
        else:
            self.open -= 1
        await _discard(connection)

    def _wake(self, turn: _Turn) -> None:
        turn.lot.unpark()

    async def close(self) -> None:
        """Close the idle connections; those in use are closed when they come back."""
        self.closed = True
        idle, self.idle = self.idle, []
        self.open -= len(idle)
        for connection in idle:
            await _discard(connection)

    def stats(self) -> PoolStats:
        """Counts of this pool."""
        idle = len(self.idle)
        return PoolStats(self.cap, self.open, self.open - idle, idle, self.opened, self.queued)


class _LoopPools:
    """The pools of one event loop, closed when the loop shuts its async generators down."""

    def __init__(self) -> None:
        self.pools: dict[PoolKey, _Pool] = {}
        self.keeper: AsyncGenerator[None, None] | None = None

    async def watch_loop(self) -> None:
        """Arrange for :meth:`close` when the loop ends (``asyncio.run``, the end of a trio run)."""
        self.keeper = self._until_loop_ends()
        await self.keeper.__anext__()

    async def _until_loop_ends(self) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            await self.close()

    async def close(self) -> None:
        pools, self.pools = list(self.pools.values()), {}
        for pool in pools:
            await pool.close()


class _Process:
    """The async pools of this process, by event loop (held weakly) and origin."""

    def __init__(self) -> None:
        self.generation = 0
        self.loops: weakref.WeakKeyDictionary[object, _LoopPools] = weakref.WeakKeyDictionary()


_process = _Process()
_inherited: list[_Process] = []


def _after_fork_in_child() -> None:
    global _process
    # The parent's streams are kept, never used and never closed: closing an event loop's
    # stream runs that loop's machinery, and garbage-collecting it would warn. Nothing is
    # sent on them; the parent's sessions are untouched.
    _inherited.append(_process)
    generation = _process.generation + 1
    _process = _Process()
    _process.generation = generation


_fork_hook = OnEachChild(_after_fork_in_child)


def _current() -> _Process:
    _fork_hook.check_process()  # for a fork that skipped the at-fork hooks
    return _process


async def _discard(connection: _Connection | None) -> None:
    if connection is not None:
        with contextlib.suppress(Exception):
            await connection.stream.aclose()


class AsyncHttp11Transport:
    """Sends :class:`HttpRequest` records over h11 on an :class:`AsyncRuntime`'s streams.

    Pools are per event loop and origin, shared by every transport of the process on that
    loop: a manager used under successive event loops (successive ``asyncio.run()``) uses
    each loop's own connections and never touches a stream of another loop.
    ``max_connections`` caps the connections one loop keeps open to one host, in use and
    idle (default :data:`~eightyeightpay.plugins.tls.DEFAULT_MAX_CONNECTIONS`; a pool's cap
    is the largest any of its transports asked for); callers beyond it wait inside their
    deadline.
    """

    def __init__(
        self,
        runtime: AsyncRuntime,
        *,
        ca_bundle: str | None = None,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
    ) -> None:
        self._runtime = runtime
        self._trust = trust_key(ca_bundle)
        self._cap = connection_cap(max_connections)
        self._joined: weakref.WeakKeyDictionary[object, dict[_Origin, _Pool]] = (
            weakref.WeakKeyDictionary()
        )
        self._generation = _process.generation
        self._broken: tuple[type[BaseException], ...] = (
            h11.ProtocolError,
            OSError,
            *runtime.broken_stream_errors,
        )
        self._checked = _CheckedHeaders()
        self._origins: dict[str, tuple[_Origin, str]] = {}
        # The pool of the last send, for the next on the same loop and origin.
        self._last: tuple[weakref.ref[object], _Origin, _Pool] | None = None
        self._closed = False

    async def send(self, request: HttpRequest, *, timeout: float) -> HttpResponse:
        """Send ``request`` within ``timeout`` seconds; return the whole response."""
        if self._closed:
            raise ManagerClosed()
        origin, host = self._origin_of(request.url)
        sent = taken = False
        connection: _Connection | None = None
        pool: _Pool | None = None
        try:
            async with self._runtime.deadline(timeout):
                pool = await self._pool(origin)
                connection = await pool.acquire(self._runtime, timeout * QUEUE_SHARE)
                taken = True  # a connection, or the place for a new one
                if connection is None:
                    connection = await self._connect(origin, host)
                if self._closed:  # closed while this call waited: it is not sent
                    raise ManagerClosed()
                sent = True
                headers = self._checked.of(host, request.headers)
                response = await connection.exchange(request, headers)
        except BaseException as error:
            if not sent and not isinstance(error, Exception):  # cancelled before writing
                note_not_sent(error)
            if taken and pool is not None:  # cancelled too: the connection's state is unknown
                await pool.release(connection, keep=False)
            if isinstance(error, TimeoutError):
                if isinstance(error, _NoConnectionFree) and pool is not None:
                    raise RequestTimeout(
                        host, timeout * QUEUE_SHARE, may_have_been_sent=False, pool_cap=pool.cap
                    ) from None
                raise RequestTimeout(host, timeout, may_have_been_sent=sent) from None
            if isinstance(error, self._broken) and not isinstance(error, EightyEightPayError):
                raise ConnectionLost(host, type(error).__name__) from None
            raise
        await pool.release(connection, keep=connection.reusable() and not self._closed)
        return response

    def _origin_of(self, url: str) -> tuple[_Origin, str]:
        """The origin of ``url`` and its ``Host`` header, parsed once per scheme and host."""
        # Everything before the path's first '/' holds the whole scheme and host part.
        end = url.find("/", url.find("//") + 2)
        prefix = url if end < 0 else url[:end]
        known = self._origins.get(prefix)
        if known is None:
            parts = urlsplit(url)
            default_port = 443 if parts.scheme == "https" else 80
            origin = _Origin(parts.scheme, parts.hostname or "", parts.port or default_port)
            if len(self._origins) >= 16:
                self._origins.clear()
            known = self._origins[prefix] = (origin, parts.netloc)
        return known

    async def _pool(self, origin: _Origin) -> _Pool:
        """The running loop's pool for ``origin``, joined on first use (anew after a fork)."""
        process = _current()
        loop = self._runtime.loop_key()
        last = self._last
        if (
            last is not None
            and last[1] is origin
            and last[0]() is loop
            and self._generation == process.generation
            and not last[2].closed
        ):
            return last[2]
        if self._generation != process.generation:
            self._joined = weakref.WeakKeyDictionary()
            self._generation = process.generation
        joined = self._joined.get(loop)
        pool = joined.get(origin) if joined is not None else None
        if pool is not None and not pool.closed:
            self._last = (weakref.ref(loop), origin, pool)
            return pool
        loop_pools = process.loops.get(loop)
        if loop_pools is None:
            loop_pools = process.loops[loop] = _LoopPools()
            await loop_pools.watch_loop()
        key = (origin, self._trust)
        pool = loop_pools.pools.get(key)
        if pool is None:
            pool = loop_pools.pools[key] = _Pool(key, self._cap)
        elif pool.cap < self._cap:
            pool.raise_cap(self._cap)
        pool.users += 1
        self._joined.setdefault(loop, {})[origin] = pool
        self._last = (weakref.ref(loop), origin, pool)
        return pool

    async def _connect(self, origin: _Origin, host: str) -> _Connection:
        tls = shared_tls_context(self._trust) if origin.scheme == "https" else None
        try:
            stream = await self._runtime.connect(origin.host, origin.port, tls)
        except self._broken as error:
            why = tls_failure(error)
            if why is not None:
                raise TLSError(host, why) from None
            raise ConnectError(host, "connection refused, reset or unreachable") from None
        return _Connection(stream)

    def pool_stats(self) -> dict[str, PoolStats]:
        """The running loop's pools this transport uses, by ``scheme://host:port``."""
        joined = self._joined.get(self._runtime.loop_key(), {})
        return {f"{o.scheme}://{o.netloc}": pool.stats() for o, pool in joined.items()}

    async def aclose(self) -> None:
        """Stop using the pools; the last transport of a pool on this loop closes it.

        Pools of other event loops are left to their loop, which closes them when it ends.
        """
        self._closed = True
        self._checked.clear()
        if self._generation != _current().generation:
            return
        joined, self._joined = self._joined, weakref.WeakKeyDictionary()
        self._last = None
        try:
            loop = self._runtime.loop_key()
        except RuntimeError:
            loop = None
        for pool_loop, pools in list(joined.items()):
            for pool in pools.values():
                pool.users -= 1
                if pool.users == 0 and pool_loop is loop:
                    loop_pools = _process.loops.get(loop)
                    if loop_pools is not None and loop_pools.pools.get(pool.key) is pool:
                        del loop_pools.pools[pool.key]
                    await pool.close()


@hookimpl
def eightyeightpay_register_async_transports(
    register: Callable[[str, TransportFactory], None],
) -> None:
    """Register the ``h11`` async transport."""
    register("h11", AsyncHttp11Transport)
