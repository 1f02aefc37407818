"""The ``h11`` async transport: HTTP/1.1 over h11, for asyncio and trio alike.

Real non-blocking I/O on the runtime's own streams, TLS through :mod:`ssl` with the same
trust rules as the threaded manager, one deadline per exchange, and keep-alive reuse. Every
failure becomes a library error saying whether the request may have reached the server.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import attrs
import h11

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
from eightyeightpay.ports import AsyncRuntime, AsyncStream

from .hookspecs import TransportFactory, hookimpl
from .tls import IDLE_REUSE_SECONDS, MAX_BODY_BYTES, tls_context, tls_failure

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


class _Connection:
    def __init__(self, stream: AsyncStream) -> None:
        self.stream = stream
        self.protocol = h11.Connection(our_role=h11.CLIENT, max_incomplete_event_size=65536)
        self.idle_since = time.monotonic()

    async def exchange(self, request: HttpRequest, host_header: str) -> HttpResponse:
        target = request.path.encode()
        headers = [("Host", host_header), *request.headers]
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
                    raise MalformedResponse(
                        f"the body is larger than {MAX_BODY_BYTES} bytes", status=status
                    )
            elif isinstance(event, h11.EndOfMessage):
                return HttpResponse(status, tuple(response_headers), bytes(body))
            elif isinstance(event, h11.ConnectionClosed):
                raise h11.RemoteProtocolError("connection closed before the response ended")

    def reusable(self) -> bool:
        if self.protocol.our_state is h11.DONE and self.protocol.their_state is h11.DONE:
            self.protocol.start_next_cycle()
            self.idle_since = time.monotonic()
            return True
        return False


class AsyncHttp11Transport:
    """Sends :class:`HttpRequest` records over h11 on an :class:`AsyncRuntime`'s streams."""

    def __init__(
        self, runtime: AsyncRuntime, *, ca_bundle: str | None = None, max_idle: int = 4
    ) -> None:
        self._runtime = runtime
        self._tls = tls_context(ca_bundle)
        self._idle: dict[_Origin, list[_Connection]] = {}
        self._max_idle = max_idle
        self._broken: tuple[type[BaseException], ...] = (
            h11.ProtocolError,
            OSError,
            *runtime.broken_stream_errors,
        )
        self._closed = False

    async def send(self, request: HttpRequest, *, timeout: float) -> HttpResponse:
        """Send ``request`` within ``timeout`` seconds; return the whole response."""
        if self._closed:
            raise ManagerClosed()
        parts = urlsplit(request.url)
        default_port = 443 if parts.scheme == "https" else 80
        origin = _Origin(parts.scheme, parts.hostname or "", parts.port or default_port)
        host = parts.netloc
        sent = False
        connection: _Connection | None = None
        try:
            async with self._runtime.deadline(timeout):
                connection = self._reuse(origin) or await self._connect(origin, host)
                sent = True
                response = await connection.exchange(request, host)
        except TimeoutError:
            await self._discard(connection)
            raise RequestTimeout(host, timeout, may_have_been_sent=sent) from None
        except EightyEightPayError:
            await self._discard(connection)
            raise
        except self._broken as error:
            await self._discard(connection)
            raise ConnectionLost(host, type(error).__name__) from None
        except BaseException:
            await self._discard(connection)  # cancelled: the connection's state is unknown
            raise
        if connection.reusable() and not self._closed:
            pool = self._idle.setdefault(origin, [])
            if len(pool) < self._max_idle:
                pool.append(connection)
                return response
        await self._discard(connection)
        return response

    def _reuse(self, origin: _Origin) -> _Connection | None:
        pool = self._idle.get(origin, [])
        while pool:
            connection = pool.pop()
            if time.monotonic() - connection.idle_since < IDLE_REUSE_SECONDS:
                return connection
        return None

    async def _connect(self, origin: _Origin, host: str) -> _Connection:
        tls = self._tls if origin.scheme == "https" else None
        try:
            stream = await self._runtime.connect(origin.host, origin.port, tls)
        except self._broken as error:
            why = tls_failure(error)
            if why is not None:
                raise TLSError(host, why) from None
            raise ConnectError(host, "connection refused, reset or unreachable") from None
        return _Connection(stream)

    async def _discard(self, connection: _Connection | None) -> None:
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.stream.aclose()

    async def aclose(self) -> None:
        """Close every idle connection."""
        self._closed = True
        pools, self._idle = self._idle, {}
        for pool in pools.values():
            for connection in pool:
                await self._discard(connection)


@hookimpl
def eightyeightpay_register_async_transports(
    register: Callable[[str, TransportFactory], None],
) -> None:
    """Register the ``h11`` async transport."""
    register("h11", AsyncHttp11Transport)
