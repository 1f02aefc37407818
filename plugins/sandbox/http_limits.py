"""The request sizes the sandbox server refuses before the emulator sees a request.

:class:`~eightyeightpay.plugins.sandbox.SandboxServer` serves with the standard library's
``http.server``, so its limits are CPython's:

- ``BaseHTTPRequestHandler.handle_one_request`` reads the request line with
  ``readline(65537)`` and answers ``414`` (Request-URI Too Long) to one longer than
  65,536 bytes, its CRLF counted;
- ``BaseHTTPRequestHandler.parse_request`` reads the header with
  ``http.client.parse_headers``, whose ``_read_headers`` refuses a line longer than
  ``http.client._MAXLINE`` (65,536 bytes, its CRLF counted; ``431`` "Line too long") and more
  than ``http.client._MAXHEADERS`` (100) lines, **the blank line that ends the header
  counted** (``431`` "Too many headers"): a request may carry at most 99 header fields;
- each refusal is ``BaseHTTPRequestHandler.send_error``'s: an HTML page
  (``error_message_format``), ``Connection: close``.

The in-process transports (:class:`~eightyeightpay.plugins.sandbox.SandboxTransport` and the
async one) answer the same request the same way through :func:`refusal`, so that a test
passes or fails alike in-process and over HTTP. The header fields counted are the
request's own and those the HTTP client the in-process transport stands in for adds to
every request (:data:`URLLIB3_ADDS` for the threaded managers, :data:`H11_ADDS` for the
asyncio and trio managers). The parity tests (``tests/parity/test_header_limits.py``) run
the same calls against both paths; ``tests/plugins/test_sandbox_server.py`` checks these
numbers against ``http.client``'s.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler

from eightyeightpay.http import HttpRequest, HttpResponse

__all__ = [
    "H11_ADDS",
    "MAX_HEADER_LINES",
    "MAX_LINE",
    "URLLIB3_ADDS",
    "refusal",
]

MAX_LINE = 65_536
"""Bytes, CRLF included, of the longest request line and the longest header line the
server reads (``http.client._MAXLINE``; the request line's ``readline(65537)``)."""

MAX_HEADER_LINES = 100
"""Header lines the server reads, the blank line that ends them included
(``http.client._MAXHEADERS``): at most 99 header fields."""

URLLIB3_ADDS = ("Host", "Accept-Encoding", "User-Agent")
"""Header fields the urllib3 transport's client adds to a request that lacks them
(``http.client``'s ``putrequest``: ``Host`` and ``Accept-Encoding: identity``; urllib3:
``User-Agent: python-urllib3/…``)."""

H11_ADDS = ("Host",)
"""Header fields the h11 transport adds to every request (``Host``)."""


def refusal(request: HttpRequest, adds: Sequence[str] = H11_ADDS) -> HttpResponse | None:
    """What the sandbox server answers ``request`` before its emulator sees it, or None.

    ``adds`` names the header fields the HTTP client adds (see :data:`URLLIB3_ADDS`). The
    checks run in the server's order: the request line (``414``), then each header line
    in turn, its length (``431`` "Line too long") before the number of lines read
    (``431`` "Too many headers"). The answer is ``send_error``'s: the same status, HTML
    body and ``Content-Type``, and ``Connection: close``.
    """
    if len(f"{request.method} {request.path} HTTP/1.1\r\n".encode()) > MAX_LINE:
        return _error_page(414)
    own = {name.lower() for name, _ in request.headers}
    # The fields the client adds come first, as it writes them; each is a short line (a
    # host and port, a product name). Then the request's own, then the blank line.
    added = [2 for name in adds if name.lower() not in own]
    lines = [*added, *(len(f"{name}: {value}\r\n".encode()) for name, value in request.headers)]
    for count, length in enumerate([*lines, 2], start=1):
        if length > MAX_LINE:
            return _error_page(
                431, "Line too long", f"got more than {MAX_LINE} bytes when reading header line"
            )
        if count > MAX_HEADER_LINES:
            return _error_page(431, "Too many headers", f"got more than {MAX_HEADER_LINES} headers")
    return None


def _error_page(code: int, message: str | None = None, explain: str | None = None) -> HttpResponse:
    """``BaseHTTPRequestHandler.send_error(code, message, explain)``'s answer."""
    short, long = BaseHTTPRequestHandler.responses[code]
    body = BaseHTTPRequestHandler.error_message_format % {
        "code": code,
        "message": html.escape(short if message is None else message, quote=False),
        "explain": html.escape(long if explain is None else explain, quote=False),
    }
    content = body.encode("UTF-8", "replace")
    return HttpResponse(
        code,
        (
            ("Connection", "close"),
            ("Content-Type", BaseHTTPRequestHandler.error_content_type),
            ("Content-Length", str(len(content))),
        ),
        content,
    )
