"""An in-process transport that serves a :class:`Sandbox` without sockets."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from urllib.parse import urlsplit

from eightyeightpay.errors import ConnectError, ConnectionLost, RequestTimeout
from eightyeightpay.http import HttpRequest, HttpResponse

from ..tls import MAX_BODY_BYTES, body_too_large
from .emulator import ConnectionFault, Sandbox
from .http_limits import URLLIB3_ADDS, refusal

__all__ = ["SandboxTransport"]


def _host(url: str) -> str:
    return urlsplit(url).netloc or "sandbox"


class SandboxTransport:
    """A :class:`~eightyeightpay.ports.Transport` that hands requests straight to a Sandbox.

    ``clock`` gives the time passed to :meth:`Sandbox.handle` (default ``time.time``); pass
    a :class:`~eightyeightpay.plugins.sandbox.clock.FakeClock` for deterministic tests. Faults
    become what a real HTTP client would report: latency advances a fake clock (or sleeps)
    and times out as :class:`~eightyeightpay.errors.RequestTimeout`, a reset is
    :class:`~eightyeightpay.errors.ConnectionLost`, a refusal
    :class:`~eightyeightpay.errors.ConnectError`, and a truncated answer (fewer bytes than its
    ``Content-Length``) :class:`~eightyeightpay.errors.ConnectionLost`, as the urllib3 and h11
    transports report it over the wire. The transport counts nothing: the sandbox does.

    A request the sandbox server would refuse before its emulator sees it is answered here
    as the server answers it, and never reaches the sandbox (nor its counters): a request
    line over 65,536 bytes ``414``; a header line over 65,536 bytes, or more than 99
    header fields, ``431`` (see :mod:`~eightyeightpay.plugins.sandbox.http_limits`). The
    fields counted are the request's own and ``client_adds``, those the HTTP client this
    transport stands in for adds: by default the urllib3 transport's (``Host``,
    ``Accept-Encoding``, ``User-Agent``), as the threaded managers send.
    """

    def __init__(
        self,
        sandbox: Sandbox,
        clock: Callable[[], float] | None = None,
        *,
        client_adds: Sequence[str] = URLLIB3_ADDS,
    ) -> None:
        self._sandbox = sandbox
        self._clock: Callable[[], float] = clock if clock is not None else time.time
        self._closed = threading.Event()
        self._client_adds = tuple(client_adds)

    @property
    def sandbox(self) -> Sandbox:
        """The emulator this transport serves."""
        return self._sandbox

    def send(self, request: HttpRequest, *, timeout: float) -> HttpResponse:
        """Hand ``request`` to the sandbox and return its answer or raise a transport error.

        After :meth:`close` every send raises :class:`~eightyeightpay.errors.ConnectError`
        (nothing is sent). A request too large for the sandbox server is answered ``414`` or
        ``431`` as the server answers it (see the class).
        """
        host = _host(request.url)
        if self._closed.is_set():
            raise ConnectError(host, "the sandbox transport is closed")
        refused = refusal(request, self._client_adds)
        if refused is not None:
            return refused
        reply = self._sandbox.handle(request, now=self._clock())
        if reply.connection_fault is ConnectionFault.REFUSE or reply.response is None:
            raise ConnectError(host, "connection refused")
        if reply.delay > 0:
            # The caller gives up at its timeout, so no more than that passes for it.
            self._wait(min(reply.delay, timeout))
            if reply.delay > timeout:
                raise RequestTimeout(host, timeout, may_have_been_sent=True)
        if reply.connection_fault is ConnectionFault.RESET:
            raise ConnectionLost(host, "connection reset by peer")
        if reply.connection_fault is ConnectionFault.TRUNCATE:
            # As over the wire: the headers announced the whole body, half of it arrived,
            # then the connection closed; an HTTP client reports that, never a short body.
            raise ConnectionLost(host, "the connection closed before the whole body arrived")
        if len(reply.response.body) > MAX_BODY_BYTES:  # as the network transports stop reading
            raise body_too_large(reply.response.status)
        return reply.response

    def _wait(self, seconds: float) -> None:
        advance = getattr(self._clock, "advance", None)
        if callable(advance):
            advance(seconds)
        else:
            time.sleep(seconds)

    def close(self) -> None:
        """Refuse every later send. Idempotent."""
        self._closed.set()

    def __enter__(self) -> SandboxTransport:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed.is_set() else "open"
        return f"SandboxTransport({self._sandbox!r}, {state})"
