"""The ``urllib3`` transport: the threaded manager's HTTP client.

TLS is always verified, against the system trust store (so ``SSL_CERT_FILE`` works) or a
``ca_bundle`` file. Every urllib3 failure becomes a library error that says whether the
request may have reached the server.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import urllib3
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
    SSLError,
)

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

__all__ = ["MAX_BODY_BYTES", "Urllib3Transport", "tls_context"]

MAX_BODY_BYTES = 4 * 1024 * 1024
"""Longest response body read; 88Pay's answers are a few hundred bytes."""
READ_CHUNK = 16 * 1024


def tls_context(ca_bundle: str | None = None) -> ssl.SSLContext:
    """A verifying TLS context: the system trust store, or only ``ca_bundle`` when given."""
    context = ssl.create_default_context(cafile=ca_bundle)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


class Urllib3Transport:
    """A thread-safe connection pool that sends :class:`HttpRequest` records."""

    def __init__(self, *, ca_bundle: str | None = None, max_connections: int = 10) -> None:
        self._pool = urllib3.PoolManager(
            num_pools=4,
            maxsize=max_connections,
            ssl_context=tls_context(ca_bundle),
            retries=False,
        )
        self._closed = False

    def send(self, request: HttpRequest, *, timeout: float) -> HttpResponse:
        """Send ``request``; return the complete response or raise a TransportError."""
        if self._closed:
            raise ManagerClosed()
        host = urlsplit(request.url).netloc
        deadline = time.monotonic() + timeout
        try:
            raw = self._pool.request(
                request.method,
                request.url,
                body=request.body or None,
                headers=dict(request.headers),
                timeout=urllib3.Timeout(connect=timeout, read=timeout),
                redirect=False,
                preload_content=False,
            )
            try:
                body = _read_body(raw, deadline, host, timeout)
            except BaseException:
                raw.close()  # a half-read connection is not reused
                raise
            raw.release_conn()
            return HttpResponse(raw.status, tuple(raw.headers.items()), body)
        except EightyEightPayError:
            raise
        except Exception as error:
            raise _translate(error, host, timeout) from None

    def close(self) -> None:
        """Close every pooled connection."""
        self._closed = True
        self._pool.clear()


def _read_body(raw: Any, deadline: float, host: str, timeout: float) -> bytes:
    """Read the body in chunks within the exchange's deadline (a slow drip cannot stall us)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        if time.monotonic() > deadline:
            raise RequestTimeout(host, timeout, may_have_been_sent=True)
        chunk = raw.read(READ_CHUNK)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise MalformedResponse(
                f"the body is larger than {MAX_BODY_BYTES} bytes", status=raw.status
            )
        chunks.append(chunk)
        if raw.length_remaining == 0:  # the whole announced body is here; skip the empty read
            return b"".join(chunks)


def _translate(error: Exception, host: str, timeout: float) -> EightyEightPayError:
    detail = type(error).__name__
    if isinstance(error, SSLError | ssl.SSLError):
        return TLSError(host, _tls_reason(error))
    if isinstance(error, NewConnectionError):
        return ConnectError(host, "connection refused or unreachable")
    if isinstance(error, ConnectTimeoutError):
        return RequestTimeout(host, timeout, may_have_been_sent=False)
    if isinstance(error, ReadTimeoutError | TimeoutError):
        return RequestTimeout(host, timeout, may_have_been_sent=True)
    if isinstance(error, ProtocolError | HTTPError | OSError):
        return ConnectionLost(host, detail)
    return ConnectionLost(host, f"unexpected {detail}")


def _tls_reason(error: Exception) -> str:
    text = str(error)
    for reason in (
        "CERTIFICATE_VERIFY_FAILED",
        "certificate has expired",
        "Hostname mismatch",
        "self-signed",
        "unable to get local issuer",
        "WRONG_VERSION_NUMBER",
    ):
        if reason.lower() in text.lower():
            return reason
    return "handshake failed"


@hookimpl
def eightyeightpay_register_transports(register: Callable[[str, TransportFactory], None]) -> None:
    """Register the ``urllib3`` transport."""
    register("urllib3", Urllib3Transport)
