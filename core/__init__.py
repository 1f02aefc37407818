"""eightyeightpay: access tokens for the 88Pay payment API, done right.

Everything a user writes comes from this one module: the managers, the stores, the policy,
every error, the API response, the sandbox and the httpx/requests auth classes. Importing it
loads nothing else: each name loads its module on first use, so ``eightyeightpay.Policy``
imports the sans-IO core (no sockets, threads, TLS or event loops) and
``eightyeightpay.TokenManager`` the threaded manager and urllib3, each only when touched.
The command line relies on this: its Ctrl-C handler is in place before anything heavy
loads (docs/cli.md, "Ctrl-C at start"). The folders behind it (``adapters``,
``plugins``) are the maintainers' layout, not an API.
"""

from __future__ import annotations

import importlib

# Not typing.TYPE_CHECKING: importing typing would be most of what this module costs, and the
# command line's Ctrl-C handler waits for this module (docs/cli.md, "Ctrl-C at start").
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .adapters.async_manager import (
        AsyncTokenManager,
        TrioTokenManager,
        open_trio_token_manager,
    )
    from .adapters.cli import main as cli_main
    from .adapters.doctor import run_doctor
    from .adapters.integrations.httpx_auth import EightyEightPayAuth
    from .adapters.integrations.requests_auth import EightyEightPayRequestsAuth
    from .adapters.lifecycle import default_clock
    from .adapters.sync import ManualBackground, TokenManager
    from .adapters.telemetry import Telemetry
    from .api import ApiResponse
    from .credentials import PRODUCTION_URL, SANDBOX_URL, CacheKey, Credentials, Environment
    from .errors import (
        AccessDenied,
        ApiError,
        ApiRateLimited,
        ApiServerError,
        BadRequest,
        ConfigurationError,
        ConnectError,
        ConnectionLost,
        CredentialsError,
        DeadlineExceeded,
        EightyEightPayError,
        EnvironmentMismatch,
        InsecureTransport,
        InvalidCredentials,
        InvalidPolicy,
        MalformedCredentials,
        MalformedResponse,
        ManagerClosed,
        NotFound,
        NotPicklable,
        PermissionDenied,
        RateLimited,
        RequestTimeout,
        RetryableError,
        ServerError,
        TLSError,
        TransportError,
        Unauthorized,
        Unprocessable,
    )
    from .fleet import BudgetRequest, StoreBudget, StoredToken, decode_stored, encode_stored
    from .governor import RateWindow
    from .http import HttpRequest, HttpResponse
    from .machine import (
        Decision,
        Exchange,
        Flight,
        Refresh,
        SendTokenRequest,
        Serve,
        ServeAndRefresh,
        Settled,
        TokenMachine,
        Unavailable,
        Wait,
    )
    from .plugins.fleet import ENCRYPTION_KEY_VARIABLE, FleetStore, Sealer
    from .plugins.memcached_store import MemcachedStore
    from .plugins.memory import MemoryStore
    from .plugins.redis_store import RedisStore
    from .plugins.registry import (
        DEFAULT_PLUGINS,
        DISABLE_VARIABLE,
        collect,
        plugin_manager,
        registry,
    )
    from .plugins.sandbox import (
        API_RATE_LIMITS,
        DEFAULT_API_KEY,
        DEFAULT_MERCHANT_ID,
        IP_BLOCKED_API_KEY,
        IP_BLOCKED_MERCHANT_ID,
        KYC_PENDING_API_KEY,
        KYC_PENDING_MERCHANT_ID,
        SUSPENDED_API_KEY,
        SUSPENDED_MERCHANT_ID,
        TOKEN_RATE_LIMITS,
        Account,
        AccountStatus,
        ConnectionFault,
        FakeClock,
        Fault,
        FaultKind,
        RateLimit,
        Sandbox,
        SandboxServer,
        SandboxTransport,
    )
    from .plugins.sandbox.async_transport import AsyncSandboxTransport
    from .policy import Policy, backoff_delay
    from .ports import (
        AsyncFleetOperations,
        AsyncRuntime,
        AsyncStream,
        AsyncTransport,
        FleetOperations,
        Transport,
    )
    from .stats import Stats
    from .tokens import Freshness, Token

__version__ = "0.1.0"

_LAZY: dict[str, str] = {
    "ApiResponse": "eightyeightpay.api",
    **{
        name: "eightyeightpay.credentials"
        for name in (
            "PRODUCTION_URL",
            "SANDBOX_URL",
            "CacheKey",
            "Credentials",
            "Environment",
        )
    },
    **{
        name: "eightyeightpay.errors"
        for name in (
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
        )
    },
    **{
        name: "eightyeightpay.fleet"
        for name in (
            "BudgetRequest",
            "StoreBudget",
            "StoredToken",
            "decode_stored",
            "encode_stored",
        )
    },
    "RateWindow": "eightyeightpay.governor",
    **{
        name: "eightyeightpay.http"
        for name in (
            "HttpRequest",
            "HttpResponse",
        )
    },
    **{
        name: "eightyeightpay.machine"
        for name in (
            "Decision",
            "Exchange",
            "Flight",
            "Refresh",
            "SendTokenRequest",
            "Serve",
            "ServeAndRefresh",
            "Settled",
            "TokenMachine",
            "Unavailable",
            "Wait",
        )
    },
    **{
        name: "eightyeightpay.policy"
        for name in (
            "Policy",
            "backoff_delay",
        )
    },
    **{
        name: "eightyeightpay.ports"
        for name in (
            "AsyncFleetOperations",
            "AsyncRuntime",
            "AsyncStream",
            "AsyncTransport",
            "FleetOperations",
            "Transport",
        )
    },
    "Stats": "eightyeightpay.stats",
    **{
        name: "eightyeightpay.tokens"
        for name in (
            "Freshness",
            "Token",
        )
    },
    "TokenManager": "eightyeightpay.adapters.sync",
    "ManualBackground": "eightyeightpay.adapters.sync",
    "default_clock": "eightyeightpay.adapters.lifecycle",
    "AsyncTokenManager": "eightyeightpay.adapters.async_manager",
    "TrioTokenManager": "eightyeightpay.adapters.async_manager",
    "open_trio_token_manager": "eightyeightpay.adapters.async_manager",
    "run_doctor": "eightyeightpay.adapters.doctor",
    "cli_main": "eightyeightpay.adapters.cli:main",
    "registry": "eightyeightpay.plugins.registry",
    "collect": "eightyeightpay.plugins.registry",
    "plugin_manager": "eightyeightpay.plugins.registry",
    "DEFAULT_PLUGINS": "eightyeightpay.plugins.registry",
    "DISABLE_VARIABLE": "eightyeightpay.plugins.registry",
    "Telemetry": "eightyeightpay.adapters.telemetry",
    "EightyEightPayAuth": "eightyeightpay.adapters.integrations.httpx_auth",
    "EightyEightPayRequestsAuth": "eightyeightpay.adapters.integrations.requests_auth",
    "MemoryStore": "eightyeightpay.plugins.memory",
    "RedisStore": "eightyeightpay.plugins.redis_store",
    "MemcachedStore": "eightyeightpay.plugins.memcached_store",
    "FleetStore": "eightyeightpay.plugins.fleet",
    "Sealer": "eightyeightpay.plugins.fleet",
    "ENCRYPTION_KEY_VARIABLE": "eightyeightpay.plugins.fleet",
    "AsyncSandboxTransport": "eightyeightpay.plugins.sandbox.async_transport",
    **{
        name: "eightyeightpay.plugins.sandbox"
        for name in (
            "API_RATE_LIMITS",
            "DEFAULT_API_KEY",
            "DEFAULT_MERCHANT_ID",
            "IP_BLOCKED_API_KEY",
            "IP_BLOCKED_MERCHANT_ID",
            "KYC_PENDING_API_KEY",
            "KYC_PENDING_MERCHANT_ID",
            "SUSPENDED_API_KEY",
            "SUSPENDED_MERCHANT_ID",
            "TOKEN_RATE_LIMITS",
            "Account",
            "AccountStatus",
            "ConnectionFault",
            "FakeClock",
            "Fault",
            "FaultKind",
            "RateLimit",
            "Sandbox",
            "SandboxServer",
            "SandboxTransport",
        )
    },
}
"""Public names loaded on first use, and the module that defines each (``module:attribute``
where the module calls it otherwise)."""

__all__ = [
    "API_RATE_LIMITS",
    "DEFAULT_API_KEY",
    "DEFAULT_MERCHANT_ID",
    "DEFAULT_PLUGINS",
    "DISABLE_VARIABLE",
    "ENCRYPTION_KEY_VARIABLE",
    "IP_BLOCKED_API_KEY",
    "IP_BLOCKED_MERCHANT_ID",
    "KYC_PENDING_API_KEY",
    "KYC_PENDING_MERCHANT_ID",
    "PRODUCTION_URL",
    "SANDBOX_URL",
    "SUSPENDED_API_KEY",
    "SUSPENDED_MERCHANT_ID",
    "TOKEN_RATE_LIMITS",
    "AccessDenied",
    "Account",
    "AccountStatus",
    "ApiError",
    "ApiRateLimited",
    "ApiResponse",
    "ApiServerError",
    "AsyncFleetOperations",
    "AsyncRuntime",
    "AsyncSandboxTransport",
    "AsyncStream",
    "AsyncTokenManager",
    "AsyncTransport",
    "BadRequest",
    "BudgetRequest",
    "CacheKey",
    "ConfigurationError",
    "ConnectError",
    "ConnectionFault",
    "ConnectionLost",
    "Credentials",
    "CredentialsError",
    "DeadlineExceeded",
    "Decision",
    "EightyEightPayAuth",
    "EightyEightPayError",
    "EightyEightPayRequestsAuth",
    "Environment",
    "EnvironmentMismatch",
    "Exchange",
    "FakeClock",
    "Fault",
    "FaultKind",
    "FleetOperations",
    "FleetStore",
    "Flight",
    "Freshness",
    "HttpRequest",
    "HttpResponse",
    "InsecureTransport",
    "InvalidCredentials",
    "InvalidPolicy",
    "MalformedCredentials",
    "MalformedResponse",
    "ManagerClosed",
    "ManualBackground",
    "MemcachedStore",
    "MemoryStore",
    "NotFound",
    "NotPicklable",
    "PermissionDenied",
    "Policy",
    "RateLimit",
    "RateLimited",
    "RateWindow",
    "RedisStore",
    "Refresh",
    "RequestTimeout",
    "RetryableError",
    "Sandbox",
    "SandboxServer",
    "SandboxTransport",
    "Sealer",
    "SendTokenRequest",
    "Serve",
    "ServeAndRefresh",
    "ServerError",
    "Settled",
    "Stats",
    "StoreBudget",
    "StoredToken",
    "TLSError",
    "Telemetry",
    "Token",
    "TokenMachine",
    "TokenManager",
    "Transport",
    "TransportError",
    "TrioTokenManager",
    "Unauthorized",
    "Unavailable",
    "Unprocessable",
    "Wait",
    "backoff_delay",
    "cli_main",
    "collect",
    "decode_stored",
    "default_clock",
    "encode_stored",
    "open_trio_token_manager",
    "plugin_manager",
    "registry",
    "run_doctor",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'eightyeightpay' has no attribute {name!r}")
    try:
        module, _, attribute = module.partition(":")
        value = getattr(importlib.import_module(module), attribute or name)
    except ModuleNotFoundError as missing:
        extra = _EXTRAS.get((missing.name or "").split(".")[0])
        if extra is None:
            raise
        raise ModuleNotFoundError(
            f"eightyeightpay.{name} needs the {missing.name!r} package: "
            f"pip install 'eightyeightpay[{extra}]'",
            name=missing.name,
        ) from None
    globals()[name] = value  # later lookups skip this hook
    return value


_EXTRAS = {
    "httpx": "httpx",
    "requests": "requests",
    "trio": "trio",
    "redis": "redis",
    "pymemcache": "memcached",
    "cryptography": "sandbox",
    "opentelemetry": "otel",
}
"""The extra that installs each optional package a lazy name may need."""


def __dir__() -> list[str]:
    # The public names only: the submodules and helpers in globals() are the layout, not API.
    return sorted({*__all__, "__version__"})
