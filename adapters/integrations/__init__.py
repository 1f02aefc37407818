"""Auth hooks that let the HTTP clients you already use call 88Pay with managed tokens.

- :mod:`eightyeightpay.adapters.integrations.httpx_auth`: ``EightyEightPayAuth``, an
  ``httpx.Auth`` for ``httpx.Client`` (with a ``TokenManager``) and ``httpx.AsyncClient``
  (with an ``AsyncTokenManager`` or a trio manager). Needs ``pip install 'eightyeightpay[httpx]'``.
- :mod:`eightyeightpay.adapters.integrations.requests_auth`: ``EightyEightPayRequestsAuth``,
  a ``requests`` auth for a ``TokenManager``. Needs ``pip install 'eightyeightpay[requests]'``.

Import the submodule of the client you use; this package imports neither client. Both add
``Authorization: Bearer``, ``x-session-id`` and, for a body without a content type,
``Content-Type: application/json``; both replay a request once after a 401 with a new token,
and neither retries a transport error (a charge that may have reached 88Pay is never sent
twice).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from eightyeightpay.errors import ConfigurationError, NotPicklable

__all__ = ["auth_not_picklable", "check_origin", "same_origin"]

_DEFAULT_PORTS = {"https": 443, "http": 80}


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    return scheme, (parts.hostname or "").lower(), port or _DEFAULT_PORTS.get(scheme)


def same_origin(url: str, base_url: str) -> bool:
    """True when ``url`` has the scheme, host and port of ``base_url`` (default ports filled in)."""
    return _origin(url) == _origin(base_url)


def check_origin(url: str, base_url: str) -> None:
    """Raise ``ConfigurationError`` unless ``url`` is on the manager's own API host.

    A client with the auth attached would otherwise hand the token and its session to any
    host it is pointed at.
    """
    if not same_origin(url, base_url):
        parts = urlsplit(url)
        raise ConfigurationError(
            f"Refusing to send the 88Pay token of {base_url} to {parts.scheme}://{parts.netloc}: "
            "the auth only authenticates requests to its manager's base URL. Point the client "
            "at that URL, or build the manager with base_url= set to where you send requests."
        )


def auth_not_picklable(kind: str) -> NotPicklable:
    """The error for pickling an auth object: it holds a manager and a live token."""
    return NotPicklable(
        f"{kind} is not pickled: it holds a manager and its token. Send what is needed to "
        "build it instead, and build the manager and the auth in the process that sends the "
        "requests (from the EIGHTY_EIGHT_PAY_* variables: TokenManager.from_env())."
    )
