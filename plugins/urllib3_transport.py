"""The ``urllib3`` transport: the threaded manager's HTTP client.

Built on urllib3's connection class, with its own keep-alive pool, so that it knows exactly
which phase failed: an error while connecting or during the TLS handshake means the request
was never sent. Every exchange has one deadline for the whole of it, enforced by a watchdog
thread that tears the socket down when it passes, so a server that drips bytes cannot hold a
caller (or the single token request) beyond its timeout.

**One pool per process and host.** Every transport of the process that talks to the same
origin (scheme, host, port and trust settings) shares one pool, whatever manager or merchant
it serves. The pool's cap bounds the connections open to that host, in use and idle
together; a caller beyond it queues, inside its own deadline, for a connection to come back.
Kept-alive connections are reused, so steady load opens none.

**Fork-safe.** A forked child never uses a connection of its parent: the pools and the
watchdog are replaced in the child (the at-fork hook of
:mod:`~eightyeightpay.plugins.process` and, for forks that skip it, a pid check on every
send), and the inherited sockets are detached and their descriptors
closed without a TLS ``close_notify`` or a ``shutdown``, which would end the parent's
session on the same socket.

TLS is always verified, against the system trust store (so ``SSL_CERT_FILE`` works) or a
``ca_bundle`` file.

urllib3 (and ``http.client`` under it) is imported when the first connection is made, not
when a transport is built: constructing a manager stays cheap.
"""

from __future__ import annotations

import collections
import contextlib
import heapq
import itertools
import math
import os
import socket
import threading
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from eightyeightpay.errors import (
    ConnectError,
    ConnectionLost,
    EightyEightPayError,
    ManagerClosed,
    RequestTimeout,
    TLSError,
    note_not_sent,
)
from eightyeightpay.http import HttpRequest, HttpResponse, response_of

from .hookspecs import TransportFactory, hookimpl
from .process import OnEachChild, first_use
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

if TYPE_CHECKING:
    import ssl

    from urllib3.connection import HTTPConnection, HTTPSConnection

__all__ = ["DEFAULT_MAX_CONNECTIONS", "Urllib3Transport", "process_pools"]

READ_CHUNK = 16 * 1024
WATCHDOG_THREAD = "eightyeightpay-deadlines"
"""The name of the one deadline watchdog thread of a process."""

Origin = tuple[str, str, int]
PoolKey = tuple[Origin, TrustKey]


class _Watch:
    """One armed deadline: the connection to tear down, and whether that happened."""

    __slots__ = ("connection", "fired")

    def __init__(self, connection: HTTPConnection) -> None:
        self.connection: HTTPConnection | None = connection
        self.fired = False


class _Watchdog:
    """One thread that tears down connections whose exchange outlived its deadline.

    It sleeps until the earliest armed deadline and is woken only when a new deadline is
    earlier than that (arming behind an earlier deadline, the usual case under load, costs
    no wake-up). It ends once nothing is armed and no transport is open.
    """

    def __init__(self) -> None:
        self._condition = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, _Watch]] = []
        self._live = 0
        self._order = itertools.count()
        self._thread: threading.Thread | None = None
        self._due = math.inf  # when the thread wakes by itself
        self._stopping = False

    def arm(self, deadline: float, connection: HTTPConnection) -> _Watch:
        """Watch ``connection`` until :meth:`disarm`; at ``deadline`` its socket is shut."""
        watch = _Watch(connection)
        with self._condition:
            self._stopping = False
            heapq.heappush(self._heap, (deadline, next(self._order), watch))
            self._live += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=WATCHDOG_THREAD, daemon=True)
                self._thread.start()
            elif deadline < self._due:
                self._due = deadline  # one wake-up is enough until the thread sleeps again
                self._condition.notify()
        return watch

    def disarm(self, watch: _Watch) -> None:
        """Stop watching (the exchange ended in time, or failed)."""
        with self._condition:
            if watch.connection is not None:
                watch.connection = None
                self._live -= 1
                if len(self._heap) > 64 + 2 * self._live:  # drop disarmed entries in bulk
                    self._heap = [entry for entry in self._heap if entry[2].connection is not None]
                    heapq.heapify(self._heap)

    def stop_when_idle(self) -> None:
        """Let the thread end once nothing is armed (the last transport closed)."""
        with self._condition:
            self._stopping = True
            self._condition.notify()

    @property
    def thread(self) -> threading.Thread | None:
        """The running thread, if any."""
        return self._thread

    def _run(self) -> None:
        condition = self._condition
        with condition:
            while True:
                heap = self._heap
                while heap and heap[0][2].connection is None:
                    heapq.heappop(heap)
                if not heap:
                    if self._stopping:
                        self._thread = None
                        return
                    self._due = math.inf
                    condition.wait()
                    continue
                deadline, _, watch = heap[0]
                wait = deadline - time.monotonic()
                if wait > 0:
                    self._due = deadline
                    condition.wait(wait)
                    continue
                heapq.heappop(heap)
                connection, watch.connection = watch.connection, None
                self._live -= 1
                watch.fired = True
                _shut(connection)


def _shut(connection: HTTPConnection | None) -> None:
    """Shut ``connection``'s socket so that a call blocked on it returns (from any thread).

    The plain socket's shutdown: TLS state, which the thread using the connection owns, is
    never touched; that thread closes the connection itself.
    """
    sock = getattr(connection, "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _Turn:
    """A caller queued for a connection: its lock is released when it is handed one."""

    __slots__ = ("connection", "granted", "lock")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.lock.acquire()
        self.granted = False
        self.connection: HTTPConnection | None = None


class _HostPool(QueueOrder):
    """The connections of this process to one origin: at most ``cap`` open at once.

    A connection given back while callers queue is handed to the one that queued first,
    with no round through the idle list: a woken caller always has its connection, and
    the caller giving it back cannot take it again ahead of the queue (with a condition
    variable it usually did, and the woken caller found nothing and slept again).
    """

    def __init__(self, key: PoolKey, cap: int) -> None:
        self.key = key
        self.cap = cap
        self.lock = threading.Lock()
        self.idle: list[tuple[float, HTTPConnection]] = []
        self.turns = collections.deque()
        self.open = 0
        self.opened = 0
        self.queued = 0
        self.users = 0
        self.closed = False

    def tls(self) -> ssl.SSLContext:
        """The pool's verifying TLS context (shared by every pool with the same trust)."""
        return shared_tls_context(self.key[1])

    def acquire(self, deadline: float, host: str, timeout: float) -> HTTPConnection | None:
        """An idle connection, or None: the caller may open one (its place is reserved).

        Beyond the cap, queues until a connection is handed over or ``deadline`` passes
        (RequestTimeout, never sent).
        """
        with self.lock:
            idle = self.idle
            while idle:
                since, connection = idle.pop()
                if time.monotonic() - since < IDLE_REUSE_SECONDS and connection.is_connected:
                    return connection
                self.open -= 1
                connection.close()
            if self.open < self.cap:
                self.open += 1
                self.opened += 1
                return None
            turn = _Turn()
            self.turns.append(turn)
            self.queued += 1
        try:
            handed = turn.lock.acquire(timeout=max(0.0, deadline - time.monotonic()))
        except BaseException:  # interrupted (KeyboardInterrupt): pass on what it was given
            if self._leave(turn):
                self.release(turn.connection, keep=turn.connection is not None)
            raise
        if not handed and not self._leave(turn):
            raise RequestTimeout(
                host, timeout * QUEUE_SHARE, may_have_been_sent=False, pool_cap=self.cap
            )
        return turn.connection

    def _leave(self, turn: _Turn) -> bool:
        """True if ``turn`` was handed its connection after all; else it leaves the queue."""
        with self.lock:
            if not turn.granted:
                self.turns.remove(turn)
            return turn.granted

    def release(self, connection: HTTPConnection | None, *, keep: bool) -> None:
        """Give back a connection (None: one that could not be opened)."""
        with self.lock:
            if keep and connection is not None and not connection.is_closed and not self.closed:
                if self.turns:
                    self._hand(connection)
                else:
                    self.idle.append((time.monotonic(), connection))
                return
            if connection is not None:
                connection.close()
            if self.turns:  # its place goes to the first in the queue, who opens a new one
                self.opened += 1
                self._hand(None)
            else:
                self.open -= 1

    def raise_cap(self, cap: int) -> None:
        """Allow ``cap`` connections; the new places go to callers in the queue first."""
        with self.lock:
            super().raise_cap(cap)

    def _wake(self, turn: _Turn) -> None:
        turn.lock.release()

    def close_idle(self) -> None:
        """Close the idle connections (the last transport using the pool closed)."""
        with self.lock:
            self.closed = True
            idle, self.idle = self.idle, []
            self.open -= len(idle)
        for _, connection in idle:
            connection.close()

    def forget(self) -> None:
        """In a forked child: let go of the parent's connections without touching them.

        Called with no lock (a parent thread may have held it at the fork). Each socket is
        detached from its object and its descriptor closed: the child's copy goes, the
        parent's stays open, and nothing is sent (no close_notify, no shutdown).
        """
        idle, self.idle = self.idle, []
        self.turns = collections.deque()  # the parent's queued callers are not here
        for _, connection in idle:
            sock, connection.sock = connection.sock, None
            if sock is not None:
                with contextlib.suppress(OSError):
                    os.close(sock.detach())

    def stats(self) -> PoolStats:
        """Counts of this pool."""
        with self.lock:
            idle = len(self.idle)
            return PoolStats(self.cap, self.open, self.open - idle, idle, self.opened, self.queued)


class _Process:
    """What this process shares across transports: the pools and the deadline watchdog."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pools: dict[PoolKey, _HostPool] = {}
        self.watchdog = _Watchdog()
        self.generation = 0

    def pool(self, key: PoolKey, cap: int) -> _HostPool:
        with self.lock:
            pool = self.pools.get(key)
            if pool is None:
                pool = self.pools[key] = _HostPool(key, cap)
            elif pool.cap < cap:
                pool.raise_cap(cap)
            pool.users += 1
            return pool

    def leave(self, pools: list[_HostPool]) -> None:
        """Transports stopped using ``pools``; a pool nobody uses closes its idle connections."""
        emptied: list[_HostPool] = []
        with self.lock:
            for pool in pools:
                pool.users -= 1
                if pool.users == 0 and self.pools.get(pool.key) is pool:
                    del self.pools[pool.key]
                    emptied.append(pool)
            if not self.pools:
                self.watchdog.stop_when_idle()
        for pool in emptied:
            pool.close_idle()


_process = _Process()


def _after_fork_in_child() -> None:
    global _process
    inherited = _process
    _process = _Process()
    _process.generation = inherited.generation + 1
    for pool in inherited.pools.values():
        pool.forget()


def _current() -> _Process:
    _fork_hook.check_process()  # for a fork that skipped the at-fork hooks
    return _process


_fork_hook = OnEachChild(_after_fork_in_child)


def process_pools() -> dict[str, PoolStats]:
    """The connection pools of this process, by ``scheme://host:port``."""
    return {
        f"{scheme}://{host}:{port}": pool.stats()
        for ((scheme, host, port), _), pool in list(_current().pools.items())
    }


def _release(process: _Process, generation: int, pools: list[_HostPool]) -> None:
    if pools and process is _process and generation == process.generation:
        process.leave(pools)


class Urllib3Transport:
    """A thread-safe keep-alive transport that sends :class:`HttpRequest` records.

    ``max_connections`` caps the connections to one host open at once, in use and idle,
    for the whole process (every transport to that host shares one pool, whose cap is the
    largest any of them asked for); default :data:`DEFAULT_MAX_CONNECTIONS`. A
    non-positive cap is a :class:`~eightyeightpay.errors.ConfigurationError`.
    """

    def __init__(
        self, *, ca_bundle: str | None = None, max_connections: int = DEFAULT_MAX_CONNECTIONS
    ) -> None:
        self._trust = trust_key(ca_bundle)
        self._cap = connection_cap(max_connections)
        self._pools: dict[Origin, _HostPool] = {}
        self._used: list[_HostPool] = []
        self._generation = -1
        self._closed = False
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self._lock = threading.Lock()
        self._exchanges: dict[HTTPConnection, int] = {}
        """Connections of this transport with an exchange under way (for :meth:`close`), with
        the process generation they were sent in: a forked child inherits its parent's."""

    def send(self, request: HttpRequest, *, timeout: float) -> HttpResponse:
        """Send ``request``; return the complete response within ``timeout`` seconds."""
        if self._closed:
            raise ManagerClosed()
        parts = urlsplit(request.url)
        origin = (
            parts.scheme,
            parts.hostname or "",
            parts.port or (443 if parts.scheme == "https" else 80),
        )
        host = parts.netloc
        deadline = time.monotonic() + timeout
        process = _current()
        pool = self._pools.get(origin) if self._generation == process.generation else None
        if pool is None:
            pool = self._join(process, origin)
        try:
            # Queue for a connection for part of the timeout only: what is sent keeps the rest.
            connection = pool.acquire(deadline - timeout * (1 - QUEUE_SHARE), host, timeout)
            if connection is None:
                try:
                    connection = self._connect(pool, host, deadline, timeout)
                except BaseException:
                    pool.release(None, keep=False)
                    raise
        except BaseException as error:
            if not isinstance(error, Exception):  # interrupted before anything was sent
                note_not_sent(error)
            raise
        watchdog = process.watchdog
        watch = watchdog.arm(deadline, connection)
        with self._lock:
            self._exchanges[connection] = process.generation
            closed = self._closed  # closed since the check above: close() missed this one
        try:
            if closed:
                raise ManagerClosed()
            connection.timeout = max(0.001, deadline - time.monotonic())
            connection.request(
                request.method,
                request.path,
                body=request.body or None,
                headers=dict(request.headers),
                preload_content=False,
            )
            raw = connection.getresponse()
            body = _read_body(raw, deadline, host, timeout)
            response = response_of(raw.status, tuple(raw.headers.items()), body)
        except BaseException as error:
            watchdog.disarm(watch)
            self._ended(connection)
            pool.release(connection, keep=False)
            if isinstance(error, ManagerClosed):  # closed before anything was sent
                raise
            if self._closed and isinstance(error, Exception):  # close() cut the exchange
                raise ManagerClosed(may_have_been_processed=True) from None
            if isinstance(error, EightyEightPayError) and not watch.fired:
                raise
            if not isinstance(error, Exception):
                raise
            if watch.fired or _is_timeout(error):
                raise RequestTimeout(host, timeout, may_have_been_sent=True) from None
            raise ConnectionLost(host, type(error).__name__) from None
        watchdog.disarm(watch)
        self._ended(connection)
        pool.release(connection, keep=not self._closed)
        return response

    def _ended(self, connection: HTTPConnection) -> None:
        with self._lock:
            self._exchanges.pop(connection, None)

    def _join(self, process: _Process, origin: Origin) -> _HostPool:
        """Start using the process's pool for ``origin`` (anew after a fork)."""
        if self._generation != process.generation:
            self._pools, self._used, self._generation = {}, [], process.generation
            if self._finalizer is not None:
                self._finalizer.detach()
                self._finalizer = None
        pool = process.pool((origin, self._trust), self._cap)
        self._pools[origin] = pool
        self._used.append(pool)
        if self._finalizer is None:
            self._finalizer = weakref.finalize(
                self, _release, process, process.generation, self._used
            )
        return pool

    def _connect(
        self, pool: _HostPool, host: str, deadline: float, timeout: float
    ) -> HTTPConnection:
        """A connected (and, for https, verified) connection; the request is not sent yet."""
        plain, secure = first_use(_connection_classes)
        scheme, hostname, port = pool.key[0]
        left = max(0.001, deadline - time.monotonic())
        connection: HTTPConnection
        if scheme == "https":
            connection = secure(hostname, port, timeout=left, ssl_context=pool.tls())
        else:
            connection = plain(hostname, port, timeout=left)
        try:
            connection.connect()
        except Exception as error:
            connection.close()
            raise _connect_error(error, host, timeout) from None
        return connection

    def pool_stats(self) -> dict[str, PoolStats]:
        """The pools this transport uses (shared with the process), by ``scheme://host:port``."""
        return {f"{s}://{h}:{p}": pool.stats() for (s, h, p), pool in self._pools.items()}

    def close(self) -> None:
        """Stop using the shared pools; the last transport of a pool closes its connections.

        An exchange of this transport under way (a request waiting on a silent server) is
        cut at once: its socket is shut, and its ``send`` raises
        :class:`~eightyeightpay.errors.ManagerClosed` (``may_have_been_processed`` True: the
        request had been sent) instead of waiting for its timeout. The
        pools' other connections, which other transports may be using, are left alone. The
        deadline thread ends once no transport of the process is open. Idempotent.
        """
        generation = _current().generation
        with self._lock:
            self._closed = True
            # Only this process's: the socket of an exchange the parent had under way when it
            # forked is the parent's too, and shutting it would cut the parent's call.
            cut = [c for c, sent_in in self._exchanges.items() if sent_in == generation]
        for connection in cut:
            _shut(connection)
        if self._finalizer is not None:
            self._finalizer()


def _read_body(raw: Any, deadline: float, host: str, timeout: float) -> bytes:
    """Read the body in chunks, never past ``MAX_BODY_BYTES``."""
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = raw.read1(READ_CHUNK) if raw.length_remaining != 0 else b""
        if time.monotonic() > deadline:
            raise RequestTimeout(host, timeout, may_have_been_sent=True)
        if not chunk:
            raw.release_conn()
            return b"".join(chunks)
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise body_too_large(raw.status)
        chunks.append(chunk)


def _connection_classes() -> tuple[type[HTTPConnection], type[HTTPSConnection]]:
    from urllib3.connection import HTTPConnection, HTTPSConnection

    return HTTPConnection, HTTPSConnection


def _is_timeout(error: BaseException) -> bool:
    # A connection was made (or tried), so urllib3 is loaded: these imports are lookups.
    from urllib3.exceptions import ConnectTimeoutError, ReadTimeoutError

    return isinstance(error, TimeoutError | ReadTimeoutError | ConnectTimeoutError | socket.timeout)


def _connect_error(error: Exception, host: str, timeout: float) -> EightyEightPayError:
    """What a failure before anything was sent means."""
    from http.client import HTTPException

    from urllib3.exceptions import HTTPError, NewConnectionError

    why = tls_failure(error)
    if why is not None:
        return TLSError(host, why)
    if isinstance(error, NewConnectionError):  # urllib3 makes it a ConnectTimeoutError too
        return ConnectError(host, "connection refused or unreachable")
    if _is_timeout(error):
        return RequestTimeout(host, timeout, may_have_been_sent=False)
    if isinstance(error, OSError | HTTPError | HTTPException):
        return ConnectError(host, "connection refused, reset or unreachable")
    return ConnectError(host, f"unexpected {type(error).__name__}")


@hookimpl
def eightyeightpay_register_transports(register: Callable[[str, TransportFactory], None]) -> None:
    """Register the ``urllib3`` transport."""
    register("urllib3", Urllib3Transport)
