"""The ``urllib3`` transport: the threaded manager's HTTP client.

Built on urllib3's connection class, with its own small keep-alive pool, so that it knows
exactly which phase failed: an error while connecting or during the TLS handshake means
the request was never sent. Every exchange has one deadline for the whole of it, enforced
by a watchdog thread that tears the socket down when it passes, so a server that drips
bytes cannot hold a caller (or the single token request) beyond its timeout.

TLS is always verified, against the system trust store (so ``SSL_CERT_FILE`` works) or a
``ca_bundle`` file.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import socket
import threading
import time
from collections.abc import Callable
from http.client import HTTPException
from typing import Any
from urllib.parse import urlsplit

from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.exceptions import ConnectTimeoutError, HTTPError, NewConnectionError, ReadTimeoutError

from eightyeightpay.errors import (
    ConnectError,
    ConnectionLost,
    EightyEightPayError,
    MalformedResponse,
    ManagerClosed,
    RequestTimeout,
    TLSError,
)
from eightyeightpay.http import HttpRequest, HttpResponse

from .hookspecs import TransportFactory, hookimpl
from .tls import IDLE_REUSE_SECONDS, MAX_BODY_BYTES, tls_context, tls_failure

__all__ = ["Urllib3Transport"]

READ_CHUNK = 16 * 1024


class _Watch:
    """One armed deadline: the connection to tear down, and whether that happened."""

    __slots__ = ("connection", "fired")

    def __init__(self, connection: HTTPConnection) -> None:
        self.connection: HTTPConnection | None = connection
        self.fired = False


class _Watchdog:
    """One thread that tears down connections whose exchange outlived its deadline."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._heap: list[tuple[float, int, _Watch]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None
        self._closed = False

    def arm(self, deadline: float, connection: HTTPConnection) -> _Watch:
        """Watch ``connection`` until :meth:`disarm`; at ``deadline`` its socket is shut."""
        watch = _Watch(connection)
        with self._condition:
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(
                    target=self._run, name="eightyeightpay-deadlines", daemon=True
                )
                self._thread.start()
            heapq.heappush(self._heap, (deadline, next(self._order), watch))
            self._condition.notify()
        return watch

    def disarm(self, watch: _Watch) -> None:
        """Stop watching (the exchange ended in time, or failed)."""
        with self._condition:
            watch.connection = None

    def _run(self) -> None:
        with self._condition:
            while not self._closed:
                while self._heap and self._heap[0][2].connection is None:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._condition.wait()
                    continue
                deadline, _, watch = self._heap[0]
                wait = deadline - time.monotonic()
                if wait > 0:
                    self._condition.wait(wait)
                    continue
                heapq.heappop(self._heap)
                connection, watch.connection = watch.connection, None
                watch.fired = True
                sock = getattr(connection, "sock", None)
                if sock is not None:
                    # The plain socket's shutdown: never touch TLS state from this thread.
                    with contextlib.suppress(OSError):
                        socket.socket.shutdown(sock, socket.SHUT_RDWR)

    def close(self) -> None:
        """Stop the thread."""
        with self._condition:
            self._closed = True
            thread = self._thread
            self._condition.notify()
        if thread is not None and thread is not threading.current_thread():
            thread.join()


class Urllib3Transport:
    """A thread-safe keep-alive transport that sends :class:`HttpRequest` records."""

    def __init__(self, *, ca_bundle: str | None = None, max_connections: int = 10) -> None:
        self._tls = tls_context(ca_bundle)
        self._max_idle = max_connections
        self._idle: dict[tuple[str, str, int], list[tuple[float, HTTPConnection]]] = {}
        self._lock = threading.Lock()
        self._watchdog = _Watchdog()
        self._closed = False

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
        connection = self._reuse(origin)
        if connection is None:
            connection = self._connect(origin, host, timeout)
        watch = self._watchdog.arm(deadline, connection)
        try:
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
            response = HttpResponse(raw.status, tuple(raw.headers.items()), body)
        except BaseException as error:
            self._watchdog.disarm(watch)
            connection.close()
            if isinstance(error, EightyEightPayError) and not watch.fired:
                raise
            if not isinstance(error, Exception):
                raise
            if watch.fired or _is_timeout(error):
                raise RequestTimeout(host, timeout, may_have_been_sent=True) from None
            raise ConnectionLost(host, type(error).__name__) from None
        self._watchdog.disarm(watch)
        self._keep(origin, connection)
        return response

    def _reuse(self, origin: tuple[str, str, int]) -> HTTPConnection | None:
        with self._lock:
            pool = self._idle.get(origin, [])
            while pool:
                since, connection = pool.pop()
                if time.monotonic() - since < IDLE_REUSE_SECONDS and connection.is_connected:
                    return connection
                connection.close()
        return None

    def _keep(self, origin: tuple[str, str, int], connection: HTTPConnection) -> None:
        if connection.is_closed or self._closed:
            connection.close()
            return
        with self._lock:
            pool = self._idle.setdefault(origin, [])
            if len(pool) < self._max_idle:
                pool.append((time.monotonic(), connection))
                return
        connection.close()

    def _connect(self, origin: tuple[str, str, int], host: str, timeout: float) -> HTTPConnection:
        """A connected (and, for https, verified) connection; the request is not sent yet."""
        scheme, hostname, port = origin
        connection: HTTPConnection
        if scheme == "https":
            connection = HTTPSConnection(hostname, port, timeout=timeout, ssl_context=self._tls)
        else:
            connection = HTTPConnection(hostname, port, timeout=timeout)
        try:
            connection.connect()
        except Exception as error:
            connection.close()
            raise _connect_error(error, host, timeout) from None
        return connection

    def close(self) -> None:
        """Close every idle connection and stop the deadline thread."""
        self._closed = True
        with self._lock:
            pools, self._idle = self._idle, {}
        for pool in pools.values():
            for _, connection in pool:
                connection.close()
        self._watchdog.close()


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
            raise MalformedResponse(
                f"the body is larger than {MAX_BODY_BYTES} bytes", status=raw.status
            )
        chunks.append(chunk)


def _is_timeout(error: BaseException) -> bool:
    return isinstance(error, TimeoutError | ReadTimeoutError | ConnectTimeoutError | socket.timeout)


def _connect_error(error: Exception, host: str, timeout: float) -> EightyEightPayError:
    """What a failure before anything was sent means."""
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
