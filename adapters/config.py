"""Configuration shared by every driver: credentials from arguments or the environment."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

import attrs

from eightyeightpay.credentials import ENVIRONMENTS, PRODUCTION_URL, SANDBOX_URL, Credentials
from eightyeightpay.errors import ConfigurationError, MalformedCredentials

__all__ = [
    "API_KEY_VARIABLE",
    "BASE_URL_VARIABLE",
    "MERCHANT_ID_VARIABLE",
    "EnvConfig",
    "build_credentials",
    "read_environment",
]

API_KEY_VARIABLE = "EIGHTY_EIGHT_PAY_API_KEY"
MERCHANT_ID_VARIABLE = "EIGHTY_EIGHT_PAY_MERCHANT_ID"
BASE_URL_VARIABLE = "EIGHTY_EIGHT_PAY_BASE_URL"
STORE_VARIABLE = "EIGHTY_EIGHT_PAY_STORE"
"""The store's registered name (``memory``, ``redis``, ``memcached`` or a plugin's)."""

log = logging.getLogger("eightyeightpay")


def build_credentials(
    api_key: str,
    merchant_id: str,
    *,
    environment: str | None = None,
    base_url: str | None = None,
    allow_http_loopback: bool = False,
) -> Credentials:
    """Credentials for a base URL, an environment name, or (neither given) the key's own.

    With neither ``environment`` nor ``base_url``, an ``sk_live_`` key goes to production and
    an ``sk_test_`` key to the sandbox.
    """
    if environment is not None and base_url is not None:
        raise ConfigurationError("Pass environment= or base_url=, not both.")
    if environment is not None:
        if environment not in ENVIRONMENTS:
            raise ConfigurationError(
                f"Unknown environment {environment!r}; use 'sandbox' or 'production'."
            )
        base_url = ENVIRONMENTS[environment]
    if base_url is None:
        live = isinstance(api_key, str) and api_key.startswith("sk_live_")
        base_url = PRODUCTION_URL if live else SANDBOX_URL
    return Credentials(api_key, merchant_id, base_url, allow_http_loopback=allow_http_loopback)


@attrs.frozen(repr=False)
class EnvConfig:
    """What ``EIGHTY_EIGHT_PAY_*`` held, trimmed, and which variables had stray whitespace."""

    api_key: str
    """The API key (secret)."""
    merchant_id: str
    """The merchant id."""
    base_url: str | None
    """The base URL, if set."""
    trimmed: tuple[str, ...]
    """Names of variables whose value had leading or trailing whitespace."""
    store: str | None = None
    """The store's registered name from ``EIGHTY_EIGHT_PAY_STORE``, if set."""

    def __repr__(self) -> str:
        return f"EnvConfig(merchant_id={self.merchant_id!r}, base_url={self.base_url!r})"


def read_environment(environ: Mapping[str, str] | None = None) -> EnvConfig:
    """Read and trim the ``EIGHTY_EIGHT_PAY_*`` variables; a missing one is a clear error."""
    env = os.environ if environ is None else environ
    missing = [
        name for name in (API_KEY_VARIABLE, MERCHANT_ID_VARIABLE) if not env.get(name, "").strip()
    ]
    if missing:
        raise MalformedCredentials(
            f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set. Export "
            "the API key and merchant id from the 88Pay dashboard (and optionally "
            f"{BASE_URL_VARIABLE}), or pass them as arguments."
        )
    trimmed = tuple(
        name
        for name in (API_KEY_VARIABLE, MERCHANT_ID_VARIABLE, BASE_URL_VARIABLE)
        if name in env and env[name] != env[name].strip()
    )
    for name in trimmed:
        log.warning("%s had leading or trailing whitespace; it was removed", name)
    base_url = env.get(BASE_URL_VARIABLE, "").strip() or None
    store = env.get(STORE_VARIABLE, "").strip() or None
    return EnvConfig(
        env[API_KEY_VARIABLE].strip(),
        env[MERCHANT_ID_VARIABLE].strip(),
        base_url,
        trimmed,
        store,
    )
