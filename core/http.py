"""Plain HTTP records exchanged between the core, the drivers and the transports.

They carry bytes, never open sockets. A transport turns an :class:`HttpRequest` into an
:class:`HttpResponse` or raises a :class:`~eightyeightpay.errors.TransportError`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import attrs

__all__ = ["HttpRequest", "HttpResponse", "header", "header_safe", "request_of", "response_of"]

_HEADER_SAFE = re.compile(r"[\x21-\x7e]+")


def header_safe(value: str) -> bool:
    """Whether ``value`` goes out as an HTTP header value unchanged: printable ASCII, no space."""
    return _HEADER_SAFE.fullmatch(value) is not None


Headers = tuple[tuple[str, str], ...]


def _headers(value: Mapping[str, str] | Headers) -> Headers:
    if type(value) is tuple:  # the drivers' case: keep a tuple already in shape as it is
        for pair in value:
            if not (type(pair) is tuple and len(pair) == 2):
                break
            if type(pair[0]) is not str or type(pair[1]) is not str:
                break
        else:
            return value
    items = value.items() if isinstance(value, Mapping) else value
    return tuple([(str(name), str(text)) for name, text in items])


def header(headers: Headers, name: str) -> str | None:
    """Return the first value of header ``name`` (case-insensitive), or None."""
    wanted = name.lower()
    for key, value in headers:
        if key.lower() == wanted:
            return value
    return None


def _masked_headers(headers: Headers) -> str:
    secret = {"authorization", "x-api-key", "x-session-id"}
    shown = [f"{k}: {'<redacted>' if k.lower() in secret else v}" for k, v in headers]
    return "{" + ", ".join(shown) + "}"


@attrs.frozen(repr=False)
class HttpRequest:
    """One HTTP request: method, absolute URL, headers and body bytes."""

    method: str
    """Upper-case HTTP method, such as ``POST``."""
    url: str
    """Absolute URL including scheme, host and path."""
    headers: Headers = attrs.field(default=(), converter=_headers)
    """Header pairs in sending order. Secret headers are redacted from the repr."""
    body: bytes = b""
    """Request body."""

    @property
    def path(self) -> str:
        """The path and query of :attr:`url`."""
        rest = self.url.split("://", 1)[-1]
        slash = rest.find("/")
        return "/" if slash < 0 else rest[slash:]

    def header(self, name: str) -> str | None:
        """Return the first value of header ``name`` (case-insensitive), or None."""
        return header(self.headers, name)

    def __repr__(self) -> str:
        return (
            f"HttpRequest({self.method} {self.url}, headers={_masked_headers(self.headers)}, "
            f"body={len(self.body)} bytes)"
        )


@attrs.frozen(repr=False)
class HttpResponse:
    """One HTTP response: status, headers and the complete body."""

    status: int
    """HTTP status code."""
    headers: Headers = attrs.field(default=(), converter=_headers)
    """Header pairs as received."""
    body: bytes = b""
    """The complete response body."""

    def header(self, name: str) -> str | None:
        """Return the first value of header ``name`` (case-insensitive), or None."""
        return header(self.headers, name)

    def __repr__(self) -> str:
        # The body of a token response holds the token: never show it.
        return f"HttpResponse({self.status}, body={len(self.body)} bytes)"


_new = object.__new__
_set = object.__setattr__  # how a frozen attrs class sets its own fields


def request_of(method: str, url: str, headers: Headers, body: bytes) -> HttpRequest:
    """``HttpRequest(method, url, headers, body)``, the converter's check skipped.

    For ``headers`` already a tuple of ``(str, str)`` pairs, as the library builds them:
    checking every pair again costs about 0.25 us of each API call.
    """
    request = _new(HttpRequest)
    _set(request, "method", method)
    _set(request, "url", url)
    _set(request, "headers", headers)
    _set(request, "body", body)
    return request


def response_of(status: int, headers: Headers, body: bytes) -> HttpResponse:
    """``HttpResponse(status, headers, body)``, the converter's check skipped.

    For ``headers`` already a tuple of ``(str, str)`` pairs, as a transport reads them.
    """
    response = _new(HttpResponse)
    _set(response, "status", status)
    _set(response, "headers", headers)
    _set(response, "body", body)
    return response
