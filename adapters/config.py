"""Configuration shared by every driver: credentials from arguments or the environment."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import attrs

from eightyeightpay.credentials import ENVIRONMENTS, PRODUCTION_URL, SANDBOX_URL, Credentials
from eightyeightpay.errors import ConfigurationError, MalformedCredentials

__all__ = [
    "API_KEY_VARIABLE",
    "API_PER_HOUR_VARIABLE",
    "API_PER_MINUTE_VARIABLE",
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
API_PER_MINUTE_VARIABLE = "EIGHTY_EIGHT_PAY_API_PER_MINUTE"
"""API calls a minute the governor allows (default 60, 88Pay's documented limit)."""
API_PER_HOUR_VARIABLE = "EIGHTY_EIGHT_PAY_API_PER_HOUR"
"""API calls an hour the governor allows (default 1,000, 88Pay's documented limit)."""

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
    api_limits: dict[str, int] = attrs.field(factory=dict)
    """``api_per_minute``/``api_per_hour`` from their variables, for those set."""

    def apply(self, options: dict[str, Any]) -> None:
        """Put what the variables set into a manager's ``options``; explicit options win.

        The API limits go into the ``policy`` option (the given one, or the default
        ``Policy()``), so that a merchant whose limits 88Pay raised, or a load test against
        an emulator with raised limits, needs no code change.
        """
        if self.base_url is not None:
            options.setdefault("base_url", self.base_url)
        if self.store is not None:
            options.setdefault("store", self.store)
        if self.api_limits:
            from eightyeightpay.policy import Policy

            given = options.get("policy")
            if given is None or isinstance(given, Policy):  # anything else is refused when built
                options["policy"] = attrs.evolve(given or Policy(), **self.api_limits)

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
    api_limits: dict[str, int] = {}
    for field, name in (
        ("api_per_minute", API_PER_MINUTE_VARIABLE),
        ("api_per_hour", API_PER_HOUR_VARIABLE),
    ):
        text = env.get(name, "").strip()
        if not text:
            continue
        # ASCII digits only ('²'.isdigit() is True), and few enough for int() to take.
        if not (text.isascii() and text.isdigit() and len(text) <= 12) or int(text) < 1:
            raise ConfigurationError(
                f"{name} must be a whole number of calls, at least 1 (digits 0-9, at most 12)."
            )
        api_limits[field] = int(text)
    return EnvConfig(
        env[API_KEY_VARIABLE].strip(),
        env[MERCHANT_ID_VARIABLE].strip(),
        base_url,
        trimmed,
        store,
        api_limits,
    )
