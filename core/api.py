"""Authenticated API calls: building them, reading their answers, and when to replay one."""

from __future__ import annotations

import json as jsonlib
import math
import re
from collections.abc import Callable, Generator, Mapping
from typing import Any

import attrs

from .errors import (
    ApiError,
    ApiRateLimited,
    ApiServerError,
    BadRequest,
    ConfigurationError,
    EightyEightPayError,
    MalformedResponse,
    ManagerClosed,
    NotFound,
    PermissionDenied,
    RetryableError,
    TransportError,
    Unauthorized,
    Unprocessable,
    was_not_sent,
)
from .fleet import Sleep
from .http import Headers, HttpRequest, HttpResponse, header, request_of
from .policy import Deadline, Policy, Rng, backoff_delay
from .tokens import Token, error_envelope, parse_retry_after
from .wire import loads

__all__ = [
    "ApiCoolDown",
    "ApiEffect",
    "ApiPermit",
    "ApiResponse",
    "ForgetApiSend",
    "InvalidateToken",
    "NeedToken",
    "Now",
    "ReserveApiCall",
    "SendApiRequest",
    "WallNow",
    "api_call",
    "build_api_request",
    "check_call",
    "encode_json",
    "is_charge",
    "may_replay",
    "read_api_response",
    "send_left",
]

CHARGES_PATH = "/api/transactions/charges"
BALANCE_PATH = "/api/balance"


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
    if type(method) is str and type(path) is str:
        verb = _CHECKED.get((method, path))
        if verb is not None:
            return verb
    # isprintable() is False for any control character (CR, LF, tab, NUL...) in one C pass.
    if (
        not isinstance(path, str)
        or not path.startswith("/")
        or path.startswith("//")
        or not path.isascii()
        or not path.isprintable()
        or " " in path
    ):
        raise ConfigurationError(
            f"The API path {_unfit(path, _fits_a_path)} It must start with a single '/' and "
            "hold no whitespace and no character outside ASCII (percent-encode it), for "
            "example '/api/transactions/charges'."
        )
    verb = method.upper() if isinstance(method, str) else ""
    if not (verb.isascii() and verb.isalpha()):
        shown = repr(method) if isinstance(method, str) and len(method) <= 12 else "given"
        raise ConfigurationError(f"The method {shown} is not an HTTP method.")
    if type(method) is str and type(path) is str:
        if len(_CHECKED) >= _CHECKED_LIMIT:
            _CHECKED.clear()
        _CHECKED[method, path] = verb
    return verb


def _fits_a_path(at: int, character: str) -> bool:
    return character.isascii() and character.isprintable() and character != " "


def _unfit(text: object, fits: Callable[[int, str], bool]) -> str:
    """What is wrong with ``text``, naming one character at most.

    A path or a header name given by mistake may hold a token (a pasted header line),
    which no message repeats.
    """
    if not isinstance(text, str):
        return f"is a {type(text).__name__}, not a str."
    for at, character in enumerate(text):
        if not fits(at, character):
            return f"({len(text)} characters) holds {character!r} at position {at}."
    if text.startswith("//"):
        return "starts with '//'."
    return "is empty." if not text else "does not start with '/'."


_CHECKED: dict[tuple[str, str], str] = {}
"""Calls found fit to send lately, with their verb: an application sends a few paths again
and again. Only a pure function's answers are kept, so sharing them between threads is safe."""
_CHECKED_LIMIT = 256


_OWN_HEADERS = frozenset({"authorization", "x-session-id", "content-type", "content-length"})
"""Headers the library sets on every call; a caller's own value for one of them is dropped."""

_FRAMING_HEADERS = frozenset(
    {"host", "transfer-encoding", "connection", "keep-alive", "te", "trailer", "upgrade"}
)
"""Headers the HTTP client sets to route and frame the call; a caller's is refused."""

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
"""A header name: an RFC 9110 token (ASCII letters, digits and a few marks)."""
_FIELD_VALUE = re.compile(r"(?:[\x21-\x7e]+(?:[ \t]+[\x21-\x7e]+)*)?")
"""A header value every transport sends alike: visible ASCII, spaces or tabs only inside."""


def encode_json(value: Any) -> bytes:
    """``value`` as the compact, standard JSON body of a call (``b""`` for None).

    Raises :class:`~eightyeightpay.errors.ConfigurationError` for what standard JSON cannot
    carry: a set, bytes or any other object that is not a dict, list, str, number, bool or
    None; a NaN or an infinity (Python would write ``NaN``, which 88Pay cannot read); a
    circular or too deeply nested structure. :func:`api_call` checks before it asks for a
    token, so a mistaken body spends no token request.
    """
    if value is None:
        return b""
    try:
        return jsonlib.dumps(value, separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError, RecursionError) as error:
        reason = (
            "it holds NaN or an infinity, which standard JSON cannot carry (check the amount)"
            if isinstance(error, ValueError) and "Out of range float" in str(error)
            else f"{type(error).__name__}: {error}"
        )
        raise ConfigurationError(
            f"json= cannot be sent as standard JSON: {reason}. Pass dicts, lists, strings, "
            "finite numbers, booleans and None only."
        ) from None


def _fits_a_name(at: int, character: str) -> bool:
    return _TOKEN.fullmatch(character) is not None


def _extra_headers(headers: object) -> tuple[tuple[str, str], ...]:
    """The caller's headers, less those the library sets, checked before anything is spent.

    A value may be a string or an int (sent as its decimal). Raises
    :class:`~eightyeightpay.errors.ConfigurationError` for ``headers`` that is not a mapping,
    a name that is not an HTTP token (a string of ASCII letters, digits and ``!#$%&'*+.^_`|~-``),
    a header the HTTP client sets itself (``Host``, ``Transfer-Encoding``, ``Connection``...),
    and a value that is not a string or an int or that holds what HTTP cannot carry alike on
    every transport: a line break or another control character, whitespace at either end,
    a character outside ASCII (encode it first).
    """
    if not headers:
        return ()
    if not isinstance(headers, Mapping):
        raise ConfigurationError(
            f"headers= must be a dict of header names to values, not {type(headers).__name__}."
        )
    extra: list[tuple[str, str]] = []
    for name, value in headers.items():
        if not isinstance(name, str) or not _TOKEN.fullmatch(name):
            raise ConfigurationError(
                f"A header name {_unfit(name, _fits_a_name)} Header names are ASCII letters, "
                "digits and !#$%&'*+.^_`|~- only."
            )
        lowered = name.lower()
        if lowered in _OWN_HEADERS:
            continue
        if lowered in _FRAMING_HEADERS:
            raise ConfigurationError(
                f"Header {name!r} routes or frames the call, which the HTTP client does; "
                "it cannot be given."
            )
        if type(value) is int:
            value = str(value)
        if not isinstance(value, str):
            raise ConfigurationError(
                f"The value of header {name!r} is a {type(value).__name__}: give a str (or an int)."
            )
        if not _FIELD_VALUE.fullmatch(value):
            raise ConfigurationError(
                f"The value of header {name!r} holds a line break, another control character, "
                "whitespace at an end or a character outside ASCII; refusing to send it "
                "(encode it first, for example with urllib.parse.quote)."
            )
        extra.append((name, str(value)))
    return tuple(extra)


def _authenticated(
    url: str, token: Token, verb: str, body: bytes, extra: tuple[tuple[str, str], ...]
) -> HttpRequest:
    return request_of(
        verb,
        url,
        (
            *token.auth_headers(),
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            *extra,
        ),
        body,
    )


def build_api_request(
    base_url: str,
    token: Token,
    method: str,
    path: str,
    *,
    json: Any = None,
    headers: Mapping[str, str] | None = None,
) -> HttpRequest:
    """An API call with the three headers 88Pay documents: token, session id, JSON type.

    Raises :class:`~eightyeightpay.errors.ConfigurationError` for a mistaken method or path
    (:func:`check_call`), a body that is not standard JSON (:func:`encode_json`) or a header
    holding a line break.
    """
    verb = check_call(method, path)
    return _authenticated(base_url + path, token, verb, encode_json(json), _extra_headers(headers))


def read_api_response(response: HttpResponse) -> ApiResponse:
    """Parse an API answer and open its envelope.

    A non-JSON body (a proxy's HTML page) leaves ``json`` and ``data`` None; a JSON body that
    is not an envelope keeps ``json`` and leaves the envelope's fields None.
    """
    parsed: Any = None
    if response.body:
        try:
            parsed = loads(response.body)
        except (ValueError, UnicodeDecodeError, RecursionError):
            parsed = None
    data: Any = None
    outcome = message = code = None
    if type(parsed) is dict:
        data, outcome, code, message = (
            parsed.get("data"),
            parsed.get("status"),
            parsed.get("code"),
            parsed.get("message"),
        )
        outcome = outcome if type(outcome) is str else None
        code = code if type(code) is int else None  # a bool is not a code
        message = message if type(message) is str else None
    return ApiResponse(
        response.status, response.headers, data, outcome, code, message, parsed, response.body
    )


def is_charge(request: HttpRequest) -> bool:
    """True for a call that moves money and must never be sent twice."""
    return request.path.split("?", 1)[0].rstrip("/") == CHARGES_PATH


def is_read_only(request: HttpRequest) -> bool:
    """True for a call that changes nothing: the balance (a POST in 88Pay's API), GET, HEAD.

    Only such a call is sent again after a 5xx or a broken connection; any other call may
    have been processed, and 88Pay documents no idempotency key.
    """
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return True
    return request.path.split("?", 1)[0].rstrip("/") == BALANCE_PATH


def may_replay(request: HttpRequest, error: EightyEightPayError) -> bool:
    """Whether a call that failed with ``error`` on the network may be sent again.

    A call that provably never left this process may; a read-only call may too. Anything
    else may have reached the server and is reported instead.
    """
    if not isinstance(error, TransportError):
        return False
    return not error.may_have_been_sent or is_read_only(request)


def _readable(response: ApiResponse) -> bool:
    """False for a body that is not JSON, an empty one too (but for a 204 or 205).

    ``json`` is None only then, or for a body of ``null``.
    """
    if response.json is not None:
        return True
    if not response.body:
        return response.status in (204, 205)
    try:
        loads(response.body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return False
    return True


def unreadable_success(response: ApiResponse, failed_request: str) -> MalformedResponse:
    """The error for a 2xx answer whose body is not JSON (a proxy's page, a cut-off body).

    88Pay answers every call with a JSON envelope; without one nobody can tell whether the
    call was carried out, so it ``may_have_been_processed`` and is sent again only when it
    is read-only (see ``docs/errors.md``).
    """
    error = MalformedResponse(
        f"the {response.status} answer to {failed_request} is not JSON ({len(response.body)} "
        "bytes). The call may have been processed: look it up before sending it again",
        status=response.status,
        may_have_been_processed=True,
    )
    error.failed_request = failed_request
    return error


_API_ERRORS: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: PermissionDenied,
    404: NotFound,
    422: Unprocessable,
}

_ADVICE = {
    BadRequest: "Fix the request (the message names the field); sending it again will not help.",
    Unauthorized: "The call was sent with a new token and refused again: check the merchant's "
    "API access.",
    PermissionDenied: "KYC pending, account suspended, or this host's IP is not on the "
    "merchant's allow-list; retrying will not help.",
    NotFound: "Check the path and the id in it.",
    Unprocessable: "88Pay refused the values (method, currency, country, amount); fix them.",
}


def api_error(
    response: ApiResponse,
    failed_request: str,
    *,
    read_only: bool,
    wall_now: float | None = None,
    least_cool_down: float = 0.0,
) -> ApiError:
    """The typed error for an API answer with an error status (see ``docs/errors.md``).

    A 429's ``retry_after`` is its cool-down: the server's wait (``Retry-After``, or the
    envelope's), never less than ``least_cool_down`` seconds (the policy's first backoff).
    """
    status = response.status
    message = response.message or ""
    if status == 429:
        raw = HttpResponse(status, response.headers, response.body)
        wait = parse_retry_after(raw, error_envelope(raw), wall_now)
        return ApiRateLimited(
            status,
            retry_after=max(wait if wait is not None else 0.0, least_cool_down),
            local=False,
            failed_request=failed_request,
            server_message=message,
            code=response.code,
            response=response,
        )
    if 500 <= status <= 599:
        advice = (
            "It changes nothing and was retried within the call's deadline."
            if read_only
            else "It is not sent again automatically (88Pay documents no idempotency key): "
            "look it up (for a charge, by its reference) before creating it again."
        )
        return ApiServerError(
            status,
            failed_request=failed_request,
            server_message=message,
            code=response.code,
            may_have_been_processed=True,
            advice=advice,
            response=response,
        )
    if status > 599:  # outside HTTP's classes: nothing says what became of the call
        return ApiError(
            status,
            failed_request=failed_request,
            server_message=message,
            code=response.code,
            may_have_been_processed=True,
            advice="A status outside HTTP's classes: look the call up before sending it again.",
            response=response,
        )
    kind = _API_ERRORS.get(status, ApiError)
    return kind(
        status,
        failed_request=failed_request,
        server_message=message,
        code=response.code,
        advice=_ADVICE.get(kind, ""),
        response=response,
    )


# --------------------------------------------------------------------------- the call protocol


@attrs.frozen
class NeedToken:
    """Effect: get a usable token within the call's deadline ``until`` (as ``get_token()``)."""

    until: Deadline
    """The call's deadline (fail-fast calls ask for their token failing fast)."""


@attrs.frozen
class SendApiRequest:
    """Effect: send ``request`` within ``timeout`` seconds, then report its end.

    Send back the response, or the TransportError raised; throw in what cut it short (a
    cancellation, :class:`~eightyeightpay.errors.ManagerClosed`).
    """

    request: HttpRequest
    """The authenticated call."""
    timeout: float = 30.0
    """Seconds the exchange may take: the call's timeout, cut to the time its deadline has
    left (a fail-fast call's one attempt keeps the whole timeout)."""
    reserved_at: float = -math.inf
    """The send's :attr:`ApiPermit.now`. When the send ends (its response, its transport
    error, or what cut it short), the driver tells the API governor, which counts the send
    then, when 88Pay had it at the latest:
    ``TokenMachine.api_send_ended(reserved_at, now, left=send_left(outcome))``."""


@attrs.frozen
class InvalidateToken:
    """Effect: stop using ``token`` (the API answered 401 to it); send back None."""

    token: Token
    """The token the API rejected."""


@attrs.frozen
class ReserveApiCall:
    """Effect: ask the API governor for one send now; send back its ``ApiPermit``."""


@attrs.frozen
class ApiPermit:
    """The API governor's answer: ``wait`` is 0 when the send was reserved.

    ``cause`` and ``scope`` say why a call is held back (telemetry shows them; the call
    protocol decides on ``wait`` alone).
    """

    now: float
    """Monotonic time of the answer: with ``wait`` 0, the time the send is counted at
    until it ends (:attr:`SendApiRequest.reserved_at`)."""
    wait: float
    """Seconds until a send is allowed (0: reserved, send now)."""
    cause: str = ""
    """With a wait: ``"cool_down"`` (an API 429's cool-down, this process's or the
    fleet's) or ``"limit"`` (the 60/minute and 1,000/hour limits, or this process's share
    of them while the fleet store fails); ``""`` when the send was reserved."""
    scope: str = "process"
    """``"fleet"`` when a fleet store's budget and cool-down govern the call, else
    ``"process"`` (no fleet store, or working alone while it fails)."""


@attrs.frozen
class ApiCoolDown:
    """Effect: 88Pay answered 429: no API call for ``seconds``; send back the time (now)."""

    seconds: float
    """The cool-down."""


@attrs.frozen
class ForgetApiSend:
    """Effect: the send reserved at ``reserved_at`` will not be made; send back None.

    Too little of the call's deadline was left to send it: the API governor takes it out
    of its windows.
    """

    reserved_at: float
    """The reservation's :attr:`ApiPermit.now`."""


@attrs.frozen
class Now:
    """Effect: send back the monotonic time."""


@attrs.frozen
class WallNow:
    """Effect: send back the driver's wall-clock reading (epoch seconds), or None.

    Asked after a 429 only: its ``Retry-After`` may be an HTTP-date, which is read against
    the wall clock (a driver without one sends back None: the date is then ignored).
    """


ApiEffect = (
    NeedToken
    | SendApiRequest
    | ForgetApiSend
    | InvalidateToken
    | ReserveApiCall
    | ApiCoolDown
    | Now
    | WallNow
    | Sleep
)
"""What an API call asks its driver to do."""

_RESERVE = ReserveApiCall()
_NOW = Now()
_WALL_NOW = WallNow()


def api_call(
    base_url: str,
    method: str,
    path: str,
    *,
    json: Any = None,
    headers: Mapping[str, str] | None = None,
    until: Deadline,
    policy: Policy,
    rng: Rng,
    timeout: float = 30.0,
) -> Generator[ApiEffect, Any, ApiResponse]:
    """The protocol of one authenticated call: yields effects, returns a 2xx/3xx answer.

    ``until`` is the call's deadline. Each send is reserved with the API governor (60/minute,
    1,000/hour, a 429's cool-down) once its token is in hand, just before it goes out with
    ``timeout`` seconds (the manager's) cut to the time left; with less than
    :data:`~eightyeightpay.policy.MIN_ATTEMPT` left it is not sent and
    :class:`~eightyeightpay.errors.DeadlineExceeded` is raised. What is retried within the
    deadline, with the jittered backoff: a call that provably never left; a 429 (88Pay did
    not process it); a read-only call (the balance) after a 5xx or a broken connection. A
    401 invalidates exactly the token used and the call is sent once more with a new one.
    Anything else raises its typed error (``api_error``; a 2xx whose body is not JSON
    raises :class:`~eightyeightpay.errors.MalformedResponse` with ``may_have_been_processed``);
    a call that may have reached the server is never sent twice.
    """
    # a mistaken call spends neither an API call nor a token
    verb = check_call(method, path)
    body, extra = encode_json(json), _extra_headers(headers)
    label = f"{verb} {path}"
    failures = 0
    sent = False  # the call may have reached 88Pay
    replayed = False  # the one 401 replay is spent
    # When the call's sleeps have ended at the latest. Time is never read as earlier than
    # that: a fake clock whose sleep does not move it (a manager on a FakeClock without
    # sleep=) would otherwise never reach the deadline, and a call that must wait would
    # wait for ever. On a real clock it changes nothing.
    awake = -math.inf
    while True:
        try:
            token: Token = yield NeedToken(until)
        except ManagerClosed as closed:  # closed while the call waited (a backoff, the limits)
            raise _closed_under_way(closed, label, sent=sent) from None
        except EightyEightPayError as failure:
            raise _token_failure(failure, label, sent=sent) from None
        # Reserved once the token is in hand, so that the send follows its reservation at
        # once: reserved before a token request of 5 s, a send would count in the window 5 s
        # before 88Pay saw it, and 61 could reach 88Pay in one of its minutes.
        permit = yield _RESERVE
        assert isinstance(permit, ApiPermit)
        now = max(permit.now, awake)
        if permit.wait > 0:
            if not until.fits(now + permit.wait):
                raise ApiRateLimited(
                    None, retry_after=permit.wait, local=True, failed_request=label
                )
            yield Sleep(permit.wait)
            awake = now + permit.wait
            continue
        request = _authenticated(base_url + path, token, verb, body, extra)
        if not until.may_start(now):
            yield ForgetApiSend(permit.now)  # reserved, but it will not be sent
            late = Deadline.too_late(f"{label} could be sent", sent=sent)
            late.failed_request = label
            raise late
        try:
            answer = yield SendApiRequest(request, until.budget(now, timeout), permit.now)
        except ManagerClosed as closed:  # the manager closed with the send under way
            raise _closed_under_way(closed, label, sent=sent) from None
        except MalformedResponse as malformed:  # an answer came that could not be read
            malformed.failed_request = label
            malformed.may_have_been_processed = True
            raise
        error: EightyEightPayError
        if isinstance(answer, TransportError):
            error = answer
            error.failed_request = label
            sent = sent or answer.may_have_been_sent
            retryable = may_replay(request, answer)
            server_wait = None
        else:
            response = read_api_response(answer)
            unreadable = response.ok and verb != "HEAD" and not _readable(response)
            if response.status < 400 and not unreadable:
                return response
            if response.status == 401 and not replayed:
                replayed = True
                yield InvalidateToken(token)
                continue
            read_only = is_read_only(request)
            if unreadable:  # a 2xx whose body is not JSON: done or not, nobody can tell
                error = unreadable_success(response, label)
            else:
                wall = (yield _WALL_NOW) if response.status == 429 else None
                error = api_error(
                    response,
                    label,
                    read_only=read_only,
                    wall_now=wall,
                    least_cool_down=policy.backoff_initial,
                )
            server_wait = None
            if isinstance(error, ApiRateLimited):
                server_wait = error.retry_after
                yield ApiCoolDown(server_wait)
            retryable = isinstance(error, ApiRateLimited) or (
                error.may_have_been_processed and read_only
            )
            sent = sent or error.may_have_been_processed
        if not retryable:
            raise error
        failures += 1
        delay = backoff_delay(failures, rng, policy, retry_after=server_wait)
        now = max((yield _NOW), awake)
        if not until.fits(now + delay):
            # A 429's retry_after is its cool-down, when the next call may go: as said.
            if isinstance(error, RetryableError):
                error.retry_after = max(error.retry_after, delay)
            raise error
        yield Sleep(delay)
        awake = now + delay


def send_left(outcome: object) -> bool:
    """Whether a send that ended with ``outcome`` may have reached 88Pay.

    ``outcome`` is what the send got: a response (True), a transport error (its
    ``may_have_been_sent``), a :class:`~eightyeightpay.errors.ManagerClosed` (its
    ``may_have_been_processed``: whether the request was out) or what else cut it short (a
    cancellation: True unless the transport noted that nothing was sent, see
    :func:`~eightyeightpay.errors.note_not_sent`). False only when the send provably never
    left this process: the API governor then forgets it.
    """
    if not isinstance(outcome, BaseException):  # a response: the usual case, first
        return True
    if isinstance(outcome, TransportError):
        return outcome.may_have_been_sent
    if isinstance(outcome, ManagerClosed):
        return outcome.may_have_been_processed
    return not was_not_sent(outcome)


def _closed_under_way(closed: ManagerClosed, label: str, *, sent: bool) -> ManagerClosed:
    """The manager closed during the call: what became of it over all its attempts."""
    error = ManagerClosed(may_have_been_processed=sent or closed.may_have_been_processed)
    error.failed_request = label
    return error


def _token_failure(failure: EightyEightPayError, label: str, *, sent: bool) -> EightyEightPayError:
    """The token request of a call failed: say so, and what became of the call itself."""
    error = failure.copy()
    error.failed_request = "token request"
    error.may_have_been_processed = sent  # of the call, not of its token request
    state = (
        "the call had been sent before and may have been processed; it was not sent again"
        if sent
        else "the call itself was not processed"
    )
    error.message = f"Getting a token for {label} failed ({state}). {failure.message}"
    error.args = (error.message,)
    return error
