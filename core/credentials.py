"""Credentials: the API key, the merchant id and the base URL they are used against.

Everything that can be known to be wrong before a request is sent is refused here, with a
message that says how to fix it: a malformed key or merchant id, stray whitespace, a sandbox
key against production or a live key against the sandbox, plain HTTP to a remote host.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from enum import Enum
from urllib.parse import SplitResult, urlsplit, urlunsplit

import attrs

from .errors import (
    ConfigurationError,
    EnvironmentMismatch,
    InsecureTransport,
    MalformedCredentials,
)
from .http import HttpRequest

__all__ = [
    "ENVIRONMENTS",
    "PRODUCTION_URL",
    "SANDBOX_URL",
    "CacheKey",
    "Credentials",
    "Environment",
    "mask_api_key",
]

SANDBOX_URL = "https://api-sandbox.88pay.io"
"""The 88Pay sandbox host."""
PRODUCTION_URL = "https://api.88pay.io"
"""The 88Pay production host."""
TOKEN_PATH = "/api/auth/token"  # noqa: S105 (a path, not a secret)
"""Where tokens are requested."""


class Environment(Enum):
    """Which 88Pay environment a base URL points at."""

    SANDBOX = "sandbox"
    PRODUCTION = "production"
    CUSTOM = "custom"
    """Any other host: an emulator, a proxy or a test server."""


ENVIRONMENTS = {
    Environment.SANDBOX.value: SANDBOX_URL,
    Environment.PRODUCTION.value: PRODUCTION_URL,
}
"""Environment names accepted by ``environment=`` and their base URLs."""

_KEY = re.compile(r"sk_(test|live)_[\x21-\x7e]{4,}")
_MERCHANT = re.compile(r"MCH-[A-Z]{3}-[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?")
_SHOWABLE_MERCHANT = re.compile(r"(?i:mch)[\w-]{0,36}")


def mask_api_key(api_key: str) -> str:
    """Show an API key as its prefix and last four characters, e.g. ``sk_test_…a1b2``."""
    match = re.match(r"sk_(test|live)_", api_key)
    prefix = match.group(0) if match else ""
    tail = api_key[-4:] if len(api_key) >= len(prefix) + 8 else ""
    return f"{prefix}…{tail}"


def fingerprint(secret: str, length: int = 12) -> str:
    """A short, one-way fingerprint of a secret: safe to log, store in keys, compare."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()[:length]


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def environment_of(base_url: str) -> Environment:
    """Tell which 88Pay environment ``base_url`` points at."""
    parts = _split(base_url)
    host = ("" if parts is None else parts.hostname or "").lower()
    if host == "api-sandbox.88pay.io":
        return Environment.SANDBOX
    if host == "api.88pay.io":
        return Environment.PRODUCTION
    return Environment.CUSTOM


USERINFO_REFUSED = (
    "The base URL holds a user name or password (user:password@host). 88Pay authenticates "
    "with the API key and merchant id, never with the URL, and a password there would be "
    "shown wherever the base URL is (reprs, logs, stats): remove it from the URL. The URL is "
    "not shown, as it may hold a password."
)
"""Why a base URL with userinfo is refused (the message holds nothing of the URL)."""


def has_userinfo(url: str) -> bool:
    """True when ``url`` names a user or password before its host (``user:password@host``).

    A URL too broken to split (``https://[::1``) counts when it holds an ``@`` anywhere.
    """
    parts = _split(url)
    return "@" in (url if parts is None else parts.netloc)


def _split(url: str) -> SplitResult | None:
    try:
        return urlsplit(url)
    except ValueError:  # an unclosed IPv6 bracket, for one
        return None


_MAY_HIDE_A_PASSWORD = re.compile(r"@|:(?!//)(?!\d*(?:/|$))")
_PLAIN_URL = re.compile(r"[A-Za-z0-9._~/:\[\]-]*")


def shown_url(url: str) -> str:
    """``url`` quoted for a message, or its length when it could hold a secret.

    Only a URL of letters, digits and ``. _ ~ / : [ ] -`` is quoted (no query, no
    ``;key=value``), and not even one of those if it could hold a password: a mistyped URL is
    not split as its author meant (``https//user:pw@host``, ``https://host:pw``), so any
    ``@``, and any ``:`` that starts neither ``://`` nor a port number, keeps it out.
    """
    if not _PLAIN_URL.fullmatch(url) or _MAY_HIDE_A_PASSWORD.search(url):
        return f"given ({len(url)} characters; not shown, as it may hold a secret)"
    return repr(url)


def _unprintable(text: str) -> bool:
    return any(c.isspace() or not c.isprintable() for c in text)


_LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)")  # '_': container and internal names


def _is_host(host: str) -> bool:
    """Whether ``host`` (from ``urlsplit(...).hostname``) is a host name or an IP address."""
    if ":" in host:  # an IPv6 address, perhaps with a zone
        address, percent, zone = host.partition("%")
        try:
            ipaddress.IPv6Address(address)
        except ValueError:
            return False
        return not percent or bool(zone.removeprefix("25"))  # '%25' spells '%' in a URL
    name = host.removesuffix(".")
    try:
        encoded = name.encode("idna").decode("ascii").lower()
        # nameprep drops some characters (a zero-width space): the name must survive the trip
        if not name.isascii() and encoded.encode("ascii").decode("idna") != name.lower():
            return False
    except UnicodeError:  # an empty label, or one over 63 characters
        return False
    labels = encoded.split(".")
    if labels[-1].isdigit():  # no top-level domain is numeric: an IPv4 address, or nothing
        try:  # (0x7f.1, 2130706433 and 017.0.0.1 would reach 127.0.0.1 through inet_aton)
            ipaddress.IPv4Address(name)
        except ValueError:
            return False
        return True
    for label in labels:
        if label.startswith("xn--"):  # punycode that decodes
            try:
                label.encode("ascii").decode("idna")
            except UnicodeError:
                return False
    return len(encoded) <= 253 and all(_LABEL.fullmatch(label) for label in labels)


def base_url_problem(url: str) -> str | None:
    """What makes ``url`` unusable as a base URL, or None; never shows a password.

    Checked: an http(s) scheme, a host that is a valid host name (no empty label, none
    over 63 characters) or address, a port number from 0 to 65535, and no query or
    fragment (the request's path is appended to the base URL: ``?`` or ``#`` would swallow
    it, and a query may hold a secret). Userinfo is :func:`has_userinfo`'s to refuse.
    """
    if _unprintable(url):
        return (
            f"The base URL {shown_url(url)} holds a space or a control character (a tab, a "
            "newline: often a copy-paste or .env artefact). Remove it."
        )
    parts = _split(url)
    host = "" if parts is None else parts.hostname or ""
    try:
        if parts is not None:
            parts.port  # noqa: B018 - raises for a port that is not a number from 0 to 65535
    except ValueError:
        host = ""
    if parts is None or parts.scheme not in ("https", "http") or not host:
        return (
            f"The base URL {shown_url(url)} is not an https:// URL with a host (and a port "
            f"number, if any). Use {PRODUCTION_URL} or {SANDBOX_URL} (or "
            "environment='production'/'sandbox')."
        )
    if not _is_host(host) or ("[" in parts.netloc and ":" not in host):  # [v1.x]: dropped
        return (
            f"The base URL's host {shown_url(host)} is not a valid host name or address "
            "(labels of letters, digits and hyphens, none empty, as in 'a..b', or over 63 "
            "characters; a dotted address of four numbers to 255). Check it for a typo; "
            f"88Pay's hosts are {PRODUCTION_URL} and {SANDBOX_URL}."
        )
    if parts.query or parts.fragment:  # an empty one is dropped when the URL is spelt
        return (
            "The base URL has a query (?…) or a fragment (#…): every request's path is "
            "appended to the base URL, where they would swallow it. Give the scheme and host "
            "(and port) only. The URL is not shown, as a query may hold a secret."
        )
    return None


def _check_text(name: str, value: str, example: str) -> None:
    if not isinstance(value, str) or not value:
        raise MalformedCredentials(
            f"The {name} is empty or missing. Set it (for example {example}) or export it in "
            "the environment."
        )
    if value != value.strip():
        raise MalformedCredentials(
            f"The {name} has leading or trailing whitespace (often a copy-paste or .env "
            "artefact). Remove it; 88Pay compares the value exactly."
        )


def _check_api_key(_instance: object, _attribute: object, value: str) -> None:
    _check_text("API key", value, "sk_test_…")
    if not _KEY.fullmatch(value):
        raise MalformedCredentials(
            f"The API key ({len(value)} characters) is not of the form sk_test_… (sandbox) or "
            "sk_live_… (production) with no spaces. Copy it again from the 88Pay dashboard."
        )


def _check_merchant_id(_instance: object, _attribute: object, value: str) -> None:
    _check_text("merchant id", value, "MCH-COL-TEST-12345")
    if not _MERCHANT.fullmatch(value):
        # Shown only when it is meant as one: the slot may hold a pasted key or password.
        if "sk_" in value.lower():  # a pasted key, alone or run together with the id
            shown = "looks like it holds an API key (sk_…; not shown): are the two swapped? It"
        elif _SHOWABLE_MERCHANT.fullmatch(value):
            shown = repr(value)
        else:
            shown = f"({len(value)} characters; not shown)"
        raise MalformedCredentials(
            f"The merchant id {shown} is not of the form MCH-{{COUNTRY}}-{{ID}} (for example "
            "MCH-COL-TEST-12345). Copy it from the 88Pay dashboard."
        )


def _normalise_url(value: str) -> str:
    """``value`` in one spelling per API host, so that a host has one token cache and budget.

    Surrounding whitespace and a trailing slash go, the scheme and host are put in lower
    case, and a default port (443 for https, 80 for http) is dropped. A URL that is not an
    http(s) URL with a host, or that names a user, is left as it is, for the checks that
    refuse it with a message showing it as given.
    """
    if not isinstance(value, str):
        return value
    url = value.strip().rstrip("/")
    parts = _split(url)
    if parts is None or _unprintable(url):  # urlsplit drops tabs and newlines: keep them
        return url
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        return url
    host = parts.hostname
    if scheme not in ("https", "http") or not host or has_userinfo(url):
        return url
    if "[" in parts.netloc and ":" not in host:  # [v1.x]: not an address; refused as given
        return url
    netloc = f"[{host}]" if ":" in host else host
    if port is not None and port != (443 if scheme == "https" else 80):
        netloc = f"{netloc}:{port}"
    # an empty '?' or '#' is dropped here: what it ended is the path, whose '/' goes too
    return urlunsplit((scheme, netloc, parts.path, parts.query, parts.fragment)).rstrip("/")


@attrs.frozen(repr=False)
class CacheKey:
    """What a cached token belongs to: who issued it and for whom. Holds no secret."""

    base_url: str
    """The base URL the token was issued by."""
    merchant_id: str
    """The merchant the token is for."""
    key_fingerprint: str
    """A one-way fingerprint of the API key, so a rotated key never reuses a token."""

    def __str__(self) -> str:
        return f"{self.base_url}|{self.merchant_id}|{self.key_fingerprint}"

    def __repr__(self) -> str:
        return f"CacheKey({self})"


@attrs.frozen(repr=False)
class Credentials:
    """An API key and merchant id bound to the base URL they are used against.

    Construction validates everything that can be checked offline. The key never appears
    in the repr or str: it shows as ``sk_test_…a1b2``. A base URL holding a user name or
    password (``https://user:password@host``) raises
    :class:`~eightyeightpay.errors.ConfigurationError`, whose message does not show the URL.
    """

    api_key: str = attrs.field(validator=_check_api_key)
    """The secret API key (``sk_test_…`` or ``sk_live_…``)."""
    merchant_id: str = attrs.field(validator=_check_merchant_id)
    """The merchant id, ``MCH-{COUNTRY}-{ID}``."""
    base_url: str = attrs.field(default=SANDBOX_URL, converter=_normalise_url)
    """Scheme and host (and port) of the API, without a trailing slash."""
    allow_http_loopback: bool = attrs.field(default=False, kw_only=True)
    """Permit plain ``http://`` to a loopback host (local emulators only)."""

    def __attrs_post_init__(self) -> None:
        if has_userinfo(self.base_url):  # before any message that shows the URL
            raise ConfigurationError(USERINFO_REFUSED)
        problem = base_url_problem(self.base_url)
        if problem is not None:
            raise InsecureTransport(problem)
        parts = urlsplit(self.base_url)
        host = parts.hostname or ""
        if parts.scheme == "http" and not (self.allow_http_loopback and _is_loopback(host)):
            raise InsecureTransport(
                f"Plain HTTP to {host} would send the API key and tokens unencrypted; 88Pay "
                "requires HTTPS. Use an https:// URL. For a local emulator on a loopback address "
                "only, pass allow_http_loopback=True."
            )
        environment = environment_of(self.base_url)
        live = self.api_key.startswith("sk_live_")
        if environment is Environment.SANDBOX and live:
            raise EnvironmentMismatch(
                "A live key (sk_live_…) is being used against the sandbox host. Use your "
                "sk_test_ key with the sandbox, or point the base URL at production "
                f"({PRODUCTION_URL})."
            )
        if environment is Environment.PRODUCTION and not live:
            raise EnvironmentMismatch(
                "A sandbox key (sk_test_…) is being used against the production host. Use your "
                "sk_live_ key with production, or point the base URL at the sandbox "
                f"({SANDBOX_URL})."
            )

    @classmethod
    def for_environment(
        cls, api_key: str, merchant_id: str, environment: str = "sandbox"
    ) -> Credentials:
        """Build credentials for ``"sandbox"`` or ``"production"``."""
        try:
            base_url = ENVIRONMENTS[environment]
        except KeyError:
            raise InsecureTransport(
                f"Unknown environment {environment!r}; use 'sandbox' or 'production', or pass "
                "base_url=."
            ) from None
        return cls(api_key, merchant_id, base_url)

    @property
    def environment(self) -> Environment:
        """Which 88Pay environment the base URL points at."""
        return environment_of(self.base_url)

    @property
    def host(self) -> str:
        """The host (and port) part of the base URL, for messages."""
        return urlsplit(self.base_url).netloc

    @property
    def masked_key(self) -> str:
        """The API key as ``sk_test_…a1b2``."""
        return mask_api_key(self.api_key)

    @property
    def cache_key(self) -> CacheKey:
        """The key under which tokens for these credentials are cached and shared."""
        return CacheKey(self.base_url, self.merchant_id, fingerprint(self.api_key))

    def token_request(self) -> HttpRequest:
        """The documented token request: POST, the two headers, no body."""
        return HttpRequest(
            "POST",
            self.base_url + TOKEN_PATH,
            (
                ("x-api-key", self.api_key),
                ("x-merchant-id", self.merchant_id),
                ("Accept", "application/json"),
                ("Content-Length", "0"),
            ),
        )

    def __repr__(self) -> str:
        return f"Credentials({self.masked_key}, {self.merchant_id}, {self.base_url})"

    __str__ = __repr__
