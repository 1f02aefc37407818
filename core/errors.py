"""The error tree. Every failure the library reports is one of these.

All errors derive from :class:`EightyEightPayError`. Messages say what happened, the likely
causes (as 88Pay's documentation lists them) and what to do. No message, repr or attribute
of an error ever holds an access token or an API key.
"""

from __future__ import annotations

from typing import Self, TypeVar

__all__ = [
    "NOT_SENT",
    "AccessDenied",
    "ApiError",
    "ApiRateLimited",
    "ApiServerError",
    "BadRequest",
    "ConfigurationError",
    "ConnectError",
    "ConnectionLost",
    "CredentialsError",
    "DeadlineExceeded",
    "EightyEightPayError",
    "EnvironmentMismatch",
    "InsecureTransport",
    "InvalidCredentials",
    "InvalidPolicy",
    "MalformedCredentials",
    "MalformedResponse",
    "ManagerClosed",
    "NotFound",
    "NotPicklable",
    "PermissionDenied",
    "RateLimited",
    "RequestTimeout",
    "RetryableError",
    "ServerError",
    "TLSError",
    "TransportError",
    "Unauthorized",
    "Unprocessable",
    "is_transient",
    "note_not_sent",
    "was_not_sent",
]


class EightyEightPayError(Exception):
    """Root of every error raised by this library."""

    failed_request: str | None = None
    """Which request failed, when ``request()`` raised it: ``"token request"`` (getting the
    call's token) or the API call itself, e.g. ``"POST /api/transactions/charges"``."""

    may_have_been_processed: bool = False
    """Whether 88Pay may have carried out the request that failed, so that sending it again
    could do it twice (a second charge). For ``request()`` it is about the API call, also
    when getting its token failed (True then only if an earlier attempt of the call had been
    sent); for ``get_token()``, about the token request. False only when the request provably
    was not carried out: refused before sending, never sent, or answered with a status that
    means "not done" (4xx, 429). Every error answers it; never send a call again while it is
    True without first looking up what became of it (88Pay documents no idempotency key)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        """The human-readable explanation, free of secrets."""

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild, (type(self), self.__dict__.copy()))

    def copy(self) -> Self:
        """The same error as a new instance, with no traceback yet.

        One error is handed to many callers: every waiter of a failed refresh, every caller
        during a backoff or a 429's cool-down. Raising one shared instance would add each
        caller's frames to its traceback without end (and show a caller frames of other
        callers), so each caller raises its own copy.
        """
        return _rebuild(type(self), self.__dict__.copy())


_Error = TypeVar("_Error", bound="EightyEightPayError")


def _rebuild(cls: type[_Error], state: dict[str, object]) -> _Error:
    error = cls.__new__(cls)
    Exception.__init__(error, state.get("message", ""))
    error.__dict__.update(state)
    return error


# --------------------------------------------------------------------------- configuration


class ConfigurationError(EightyEightPayError, ValueError):
    """The configuration is wrong; found before any request was sent."""


class NotPicklable(EightyEightPayError, TypeError):
    """An object that would carry a secret (or a process's state) across ``pickle`` refuses.

    A manager built by ``from_env()`` pickles as "build again from the environment"; every
    other manager, and the httpx/requests auth objects, raise this naming the fix. It is a
    ``TypeError``, as pickle's own refusals are.
    """


class CredentialsError(EightyEightPayError):
    """The API key or merchant id cannot work: malformed, for the other environment, or rejected."""


class MalformedCredentials(CredentialsError, ConfigurationError):
    """The API key or merchant id does not have the documented form (or has stray whitespace)."""


class EnvironmentMismatch(CredentialsError, ConfigurationError):
    """A sandbox key is used against production, or a live key against the sandbox."""


class InsecureTransport(ConfigurationError):
    """A plain ``http://`` URL was given where HTTPS is required."""


class InvalidPolicy(ConfigurationError):
    """A refresh policy whose windows do not fit a token's life or would break the rate limit."""


class InvalidCredentials(CredentialsError):
    """88Pay answered 401 to a token request: the key or merchant id was not accepted."""

    def __init__(self, server_message: str = "Invalid API key or merchant ID") -> None:
        super().__init__(
            f"88Pay rejected the credentials (401: {server_message}). Likely causes: the API key "
            "or merchant id is wrong or was revoked, the key belongs to another merchant, or a "
            "sandbox key (sk_test_) is sent to production or a live key (sk_live_) to the "
            "sandbox. Check both values in the 88Pay dashboard and the base URL; the library "
            "does not retry this error."
        )
        self.server_message = server_message
        """The message 88Pay sent with the 401."""


class AccessDenied(EightyEightPayError):
    """88Pay answered 403: the merchant may not use the API right now."""

    def __init__(self, server_message: str = "Access denied") -> None:
        super().__init__(
            f"88Pay denied access (403: {server_message}). Likely causes: the merchant's KYC "
            "verification is pending, the account is suspended, or this host's IP address is "
            "not on the merchant's allow-list. Contact 88Pay support or update the allow-list; "
            "retrying will not help."
        )
        self.server_message = server_message
        """The message 88Pay sent with the 403."""


class RateLimited(EightyEightPayError):
    """No token may be requested now; ``retry_after`` says when one can next be had."""

    def __init__(self, retry_after: float, *, local: bool, server_message: str = "") -> None:
        wait = max(0.0, retry_after)
        if local:
            text = (
                f"No token can be had for {wait:.1f} s: no usable token is cached, and a request "
                "now would break 88Pay's limit of 10 token requests a minute and 100 an hour per "
                "merchant, or 88Pay answered 429 and its cool-down is still running (no request "
                "was sent for this call). Retry after retry_after seconds, or give the call a "
                "deadline long enough to wait."
            )
        else:
            text = (
                f"88Pay rate-limited the token request (429: "
                f"{server_message or 'Rate limit exceeded'}); retry after {wait:.1f} s. Token "
                "requests are limited to 10 a minute and 100 an hour per merchant: share one "
                "token between processes (a fleet store) instead of requesting one per process."
            )
        super().__init__(text)
        self.retry_after = wait
        """Seconds until a token request may be sent again."""
        self.local = local
        """True when the library refused to send (no request reached 88Pay)."""
        self.server_message = server_message
        """88Pay's message with its 429, or an empty string."""

    def waiting(self, seconds: float) -> RateLimited:
        """The same refusal with ``retry_after`` (and the message's wait) ``seconds``."""
        return type(self)(seconds, local=self.local, server_message=self.server_message)


# --------------------------------------------------------------------------- retryable


class RetryableError(EightyEightPayError):
    """A failure that may pass: a 5xx answer or a network problem. Backoff applies.

    "May pass" is about the failure, not about the request: a charge whose connection broke
    (``ConnectionLost``) or timed out after it was sent is a RetryableError with
    ``may_have_been_processed`` True, and must be looked up, not sent again.
    """

    retry_after: float = 0.0
    """Seconds until the library will try again (0 until a backoff is known)."""


class ServerError(RetryableError):
    """88Pay answered with a 5xx status."""

    def __init__(self, status: int, detail: str = "") -> None:
        extra = f": {detail}" if detail else ""
        super().__init__(
            f"88Pay answered {status}{extra}. This is a server-side or gateway problem; the "
            "library backs off and tries again, and a cached token keeps being used meanwhile."
        )
        self.status = status
        """The HTTP status received."""


class TransportError(RetryableError):
    """The request did not complete over the network."""

    def __init__(self, message: str, *, may_have_been_sent: bool) -> None:
        super().__init__(message)
        self.may_have_been_sent = may_have_been_sent
        """False only when the request provably never left this process (kept as it was;
        ``may_have_been_processed`` is the attribute every error has)."""
        self.may_have_been_processed = may_have_been_sent


class ConnectError(TransportError):
    """No connection could be made; the request was never sent."""

    def __init__(self, host: str, detail: str) -> None:
        super().__init__(
            f"Could not connect to {host} ({detail}). Check the base URL, DNS, proxies and "
            "firewalls; the request was not sent.",
            may_have_been_sent=False,
        )


class TLSError(TransportError):
    """The TLS handshake failed; the request was never sent."""

    def __init__(self, host: str, detail: str) -> None:
        super().__init__(
            f"TLS verification with {host} failed ({detail}). Check the system clock, the CA "
            "bundle (ca_bundle= or SSL_CERT_FILE) and that the URL's host name matches the "
            "certificate; the request was not sent.",
            may_have_been_sent=False,
        )


class ConnectionLost(TransportError):
    """The connection broke after the request may have been sent."""

    def __init__(self, host: str, detail: str) -> None:
        super().__init__(
            f"The connection to {host} broke after the request may have been sent ({detail}). "
            "A charge is never replayed automatically: look it up before trying again.",
            may_have_been_sent=True,
        )


class RequestTimeout(TransportError):
    """No complete answer arrived in time."""

    def __init__(
        self,
        host: str,
        timeout: float,
        *,
        may_have_been_sent: bool,
        pool_cap: int | None = None,
    ) -> None:
        if pool_cap is None:
            message = (
                f"No answer from {host} within {timeout:g} s. Check the network path and "
                "88Pay's status; raise the timeout if the link is slow."
            )
        else:  # queued behind the calls holding every connection the pool allows
            message = (
                f"No connection to {host} came free within {timeout:.2f} s: all {pool_cap} the "
                "pool allows (max_connections) were in use by other calls, and this one was "
                "not sent. Raise max_connections=, or give calls a longer deadline= when this "
                "many run at once."
            )
        super().__init__(message, may_have_been_sent=may_have_been_sent)
        self.pool_cap = pool_cap
        """The pool's ``max_connections`` when the time ran out waiting for a connection of
        it (nothing was sent), else None."""


class DeadlineExceeded(RequestTimeout):
    """The call's deadline (``deadline=``, by default ``Policy.deadline``) ran out first.

    Raised when too little of the deadline was left to start an attempt (nothing was sent
    for it), or when the call stopped waiting for a token request shared with other callers
    (that request goes on and its token is cached for the next call). ``retry_after`` says
    when a token or a call can next be had; ``may_have_been_sent`` keeps its meaning (a
    charge that may have been sent is never sent again). It is a
    :class:`RequestTimeout`, so ``except RequestTimeout`` catches it too.
    """

    def __init__(self, what: str, *, retry_after: float, may_have_been_sent: bool) -> None:
        wait = max(0.0, retry_after)
        TransportError.__init__(
            self,
            f"The call's deadline ran out {what}; the next can be had in {wait:.1f} s "
            "(retry_after). Give the call a longer deadline= to wait for it.",
            may_have_been_sent=may_have_been_sent,
        )
        self.retry_after = wait


# --------------------------------------------------------------------------- API calls


class ApiError(EightyEightPayError):
    """88Pay answered an API call made with ``request()`` with an error status.

    Carries the HTTP :attr:`status`, the envelope's :attr:`code` and :attr:`server_message`
    (88Pay's error envelope ``{"status": "Error", "code": N, "message": "..."}``), the call
    (``failed_request``) and whether it ``may_have_been_processed``. ``response``
    is the whole answer (an ``ApiResponse``) when one arrived.
    """

    def __init__(
        self,
        status: int | None,
        *,
        failed_request: str,
        server_message: str = "",
        code: int | None = None,
        may_have_been_processed: bool = False,
        advice: str = "",
        response: object = None,
    ) -> None:
        said = f": {server_message[:200]}" if server_message else ""
        answered = f"88Pay answered {status}{said}" if status is not None else "not sent"
        processed = (
            "It may have been processed." if may_have_been_processed else "It was not processed."
        )
        super().__init__(f"{failed_request}: {answered}. {processed} {advice}".rstrip())
        self.status = status
        """The HTTP status (None when the library refused to send)."""
        self.code = code
        """The envelope's ``code`` (88Pay repeats the status there), or None."""
        self.server_message = server_message
        """The envelope's ``message``, or an empty string."""
        self.failed_request = failed_request
        self.may_have_been_processed = may_have_been_processed
        """True when 88Pay may have acted on the call (a 5xx after it was received)."""
        self.response = response
        """The ``ApiResponse`` received, or None."""


class BadRequest(ApiError):
    """400: the request is malformed (a field missing or of the wrong type); fix it."""


class Unauthorized(ApiError):
    """401 to the call after it was sent once more with a new token."""


class PermissionDenied(ApiError):
    """403 to an API call: KYC pending, account suspended, or this IP not allow-listed."""


class NotFound(ApiError):
    """404: no such path or object."""


class Unprocessable(ApiError):
    """422: well-formed but refused (an unsupported method, currency or amount)."""


class ApiRateLimited(ApiError):
    """429 to an API call, or a call not sent because it would break the API limits.

    The limits are the policy's ``api_per_minute`` and ``api_per_hour`` (88Pay's: 60 a
    minute, 1,000 an hour), and a 429's cool-down.

    ``retry_after`` says when the next call may be sent; ``local`` is True when the library
    refused to send (nothing reached 88Pay).
    """

    def __init__(
        self,
        status: int | None,
        *,
        retry_after: float,
        local: bool,
        failed_request: str,
        server_message: str = "",
        code: int | None = None,
        response: object = None,
    ) -> None:
        wait = max(0.0, retry_after)
        if local:
            advice = (
                f"Sending it now would break the API limits kept for this merchant (the "
                f"policy's api_per_minute and api_per_hour; 88Pay's are 60 a minute and 1,000 "
                f"an hour) or a 429's cool-down: retry after {wait:.1f} s."
            )
        else:
            advice = f"Retry after {wait:.1f} s."
        super().__init__(
            status,
            failed_request=failed_request,
            server_message=server_message,
            code=code,
            advice=advice,
            response=response,
        )
        self.retry_after = wait
        """Seconds until a call may be sent again."""
        self.local = local
        """True when the library refused to send the call."""


class ApiServerError(ApiError):
    """5xx to an API call.

    A call that changes state (a charge) may have been processed: it is never sent again
    automatically (``may_have_been_processed``); a read-only one is retried.
    """


# --------------------------------------------------------------------------- the rest


class MalformedResponse(EightyEightPayError):
    """88Pay's answer did not have the documented shape."""

    def __init__(
        self, detail: str, *, status: int | None = None, may_have_been_processed: bool = False
    ) -> None:
        where = f" (HTTP {status})" if status is not None else ""
        super().__init__(
            f"88Pay's response{where} did not have the documented shape: {detail}. A proxy or "
            "gateway may have answered instead of 88Pay; check the base URL and any proxy."
        )
        self.may_have_been_processed = may_have_been_processed
        self.detail = detail
        """What was wrong, without the response's content."""
        self.status = status
        """The HTTP status of the malformed response, when known."""


class ManagerClosed(EightyEightPayError):
    """The token manager was closed; open a new one.

    ``may_have_been_processed`` is True when closing cut a call whose request had been sent
    (its answer never came): 88Pay may have carried it out, so look it up before sending it
    again.
    """

    def __init__(self, *, may_have_been_processed: bool = False) -> None:
        if may_have_been_processed:
            message = (
                "This token manager was closed while the call was in flight: its request had "
                "been sent and may have been processed. Look it up before sending it again, "
                "with a new token manager."
            )
        else:
            message = "This token manager is closed; create a new one to make requests."
        super().__init__(message)
        self.may_have_been_processed = may_have_been_processed


def is_transient(error: EightyEightPayError | None) -> bool:
    """Whether another attempt may succeed.

    Transient: a 5xx, a network failure, a malformed answer (a gateway's page, a token
    unusable on arrival) or a 429. Credentials errors, access denied and configuration
    errors are definite: retrying cannot help.
    """
    return isinstance(error, RetryableError | MalformedResponse | RateLimited)


NOT_SENT = "eightyeightpay: stopped before its request was sent; 88Pay never saw it"
"""The note (PEP 678) on a cancellation or an interrupt that stopped a send before its request
was written (see :func:`note_not_sent`)."""


def note_not_sent(stopped: BaseException) -> None:
    """Say on ``stopped`` (a cancellation, an interrupt) that no byte of the request left.

    A transport calls it before re-raising what stopped its ``send`` while it waited for a
    connection or opened one: the API governor then takes the send out of its windows
    (88Pay never saw it) instead of counting it as a send that may have arrived. The note
    also shows in a traceback. Once per exception.
    """
    if not was_not_sent(stopped):
        stopped.add_note(NOT_SENT)


def was_not_sent(stopped: BaseException) -> bool:
    """Whether a transport said (:func:`note_not_sent`) that ``stopped`` came before sending."""
    return NOT_SENT in getattr(stopped, "__notes__", ())
