"""Authenticated API calls: building them, reading their answers, and when to replay one."""

from __future__ import annotations

import json as jsonlib
from collections.abc import Generator, Mapping
from typing import Any

import attrs

from .errors import ConfigurationError, EightyEightPayError, TransportError
from .http import Headers, HttpRequest, HttpResponse, header
from .tokens import Token

__all__ = [
    "ApiEffect",
    "ApiResponse",
    "InvalidateToken",
    "NeedToken",
    "SendApiRequest",
    "api_call",
    "build_api_request",
    "check_call",
    "is_charge",
    "may_replay",
    "read_api_response",
]

CHARGES_PATH = "/api/transactions/charges"


@attrs.frozen(repr=False)
class ApiResponse:
    """The answer to an API call, with 88Pay's envelope opened.

    88Pay answers ``{"status": "Success"|"Error", "code": N, "message": "...", "data": {...}}``
    (88Pay API reference, response format). :attr:`data` is the envelope's ``data``; its
    ``status``, ``code`` and ``message`` are :attr:`outcome`, :attr:`code` and
    :attr:`message`; :attr:`json` is the whole parsed body and :attr:`body` the raw bytes.
    """

    status: int
    """HTTP status."""
    headers: Headers
    """Response headers as received; :meth:`header` looks one up by name."""
    data: Any
    """The envelope's ``data`` (a dict for a charge or a balance), or None when absent."""
    outcome: str | None = None
    """The envelope's ``status``: ``"Success"`` or ``"Error"``; None for a body without one."""
    code: int | None = None
    """The envelope's ``code`` (88Pay repeats the HTTP status there), or None."""
    message: str | None = None
    """The envelope's ``message``, or None."""
    json: Any = None
    """The whole parsed JSON body, or None when the body was empty or not JSON."""
    body: bytes = b""
    """The raw body."""

    @property
    def ok(self) -> bool:
        """True for a 2xx status."""
        return 200 <= self.status < 300

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or None."""
        return header(self.headers, name)

    def __repr__(self) -> str:
        return f"ApiResponse({self.status}, body={len(self.body)} bytes)"


def check_call(method: str, path: str) -> str:
    """The HTTP method in upper case, once ``method`` and ``path`` are fit to send.

    Raises :class:`~eightyeightpay.errors.ConfigurationError` for a method that is not a
    word of letters, or a path that does not start with a single ``/`` or holds whitespace
    or a control character. :func:`api_call` checks before it asks for a token, so a
    mistaken call spends no token request.
    """
    # isprintable() is False for any control character (CR, LF, tab, NUL...) in one C pass.
    if (
        not isinstance(path, str)
        or not path.startswith("/")
        or path.startswith("//")
        or not path.isprintable()
        or " " in path
    ):
        raise ConfigurationError(
            f"The API path {path!r} must start with a single '/' and hold no whitespace, "
            "for example '/api/transactions/charges'."
        )
    verb = method.upper() if isinstance(method, str) else ""
    if not verb.isalpha():
        raise ConfigurationError(f"{method!r} is not an HTTP method.")
    return verb


_OWN_HEADERS = frozenset({"authorization", "x-session-id", "content-type", "content-length"})
"""Headers the library sets on every call; a caller's own value for one of them is dropped."""


def build_api_request(
    base_url: str,
    token: Token,
    method: str,
    path: str,
    *,
    json: Any = None,
    headers: Mapping[str, str] | None = None,
) -> HttpRequest:
    """An API call with the three headers 88Pay documents: token, session id, JSON type."""
    verb = check_call(method, path)
    body = b"" if json is None else jsonlib.dumps(json, separators=(",", ":")).encode()
    extra: tuple[tuple[str, str], ...] = ()
    if headers:
        extra = tuple((k, v) for k, v in headers.items() if k.lower() not in _OWN_HEADERS)
        for name, value in extra:
            if any(c in f"{name}{value}" for c in "\r\n"):
                raise ConfigurationError(
                    f"Header {name!r} holds a line break; refusing to send it."
                )
    return HttpRequest(
        verb,
        base_url + path,
        (
            *token.auth_headers(),
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            *extra,
        ),
        body,
    )


def read_api_response(response: HttpResponse) -> ApiResponse:
    """Parse an API answer and open its envelope.

    A non-JSON body (a proxy's HTML page) leaves ``json`` and ``data`` None; a JSON body that
    is not an envelope keeps ``json`` and leaves the envelope's fields None.
    """
    parsed: Any = None
    if response.body:
        try:
            parsed = jsonlib.loads(response.body)
        except (ValueError, UnicodeDecodeError, RecursionError):
            parsed = None
    data: Any = None
    outcome = message = None
    code = None
    if isinstance(parsed, dict):
        data = parsed.get("data")
        if isinstance(parsed.get("status"), str):
            outcome = parsed["status"]
        if isinstance(parsed.get("code"), int) and not isinstance(parsed.get("code"), bool):
            code = parsed["code"]
        if isinstance(parsed.get("message"), str):
            message = parsed["message"]
    return ApiResponse(
        response.status, response.headers, data, outcome, code, message, parsed, response.body
    )


def is_charge(request: HttpRequest) -> bool:
    """True for a call that moves money and must never be sent twice."""
    return request.path.split("?", 1)[0].rstrip("/") == CHARGES_PATH


def may_replay(request: HttpRequest, error: EightyEightPayError) -> bool:
    """Whether a call that failed with ``error`` may be sent again automatically.

    88Pay documents no idempotency key, so only a call that provably never left this
    process is replayed; anything that may have reached the server is reported instead.
    """
    del request  # the rule is the same for every call; charges are the case it protects
    return isinstance(error, TransportError) and not error.may_have_been_sent


# --------------------------------------------------------------------------- the call protocol


@attrs.frozen
class NeedToken:
    """Effect: get a usable token (the manager's ``get_token()``) and send it back."""


@attrs.frozen
class SendApiRequest:
    """Effect: send ``request``; send back the response, or the TransportError raised."""

    request: HttpRequest
    """The authenticated call."""


@attrs.frozen
class InvalidateToken:
    """Effect: stop using ``token`` (the API answered 401 to it); send back None."""

    token: Token
    """The token the API rejected."""


_NEED_TOKEN = NeedToken()

ApiEffect = NeedToken | SendApiRequest | InvalidateToken
"""What an API call asks its driver to do."""


def api_call(
    base_url: str,
    method: str,
    path: str,
    *,
    json: Any = None,
    headers: Mapping[str, str] | None = None,
) -> Generator[ApiEffect, Any, ApiResponse]:
    """The protocol of one authenticated call: yields effects, returns the answer.

    A call that provably never left is sent once more; one that may have reached the server
    is not (its TransportError is raised from here). A 401 invalidates exactly the token that
    was used, and the call is sent once more with a new one.
    """
    check_call(method, path)
    response: HttpResponse | None = None
    for attempt in range(2):
        token: Token = yield _NEED_TOKEN
        request = build_api_request(base_url, token, method, path, json=json, headers=headers)
        answer = yield SendApiRequest(request)
        if isinstance(answer, TransportError):
            if not may_replay(request, answer):
                raise answer
            answer = yield SendApiRequest(request)
            if isinstance(answer, EightyEightPayError):
                raise answer
        response = answer
        if response.status != 401 or attempt == 1:
            break
        yield InvalidateToken(token)
    assert response is not None
    return read_api_response(response)
