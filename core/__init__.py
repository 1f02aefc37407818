"""eightyeightpay: access tokens for the 88Pay payment API, done right.

Importing the package loads only the sans-IO core: no sockets, threads, TLS or event loops.
The drivers load on first use, so ``eightyeightpay.TokenManager`` imports the threaded
manager and urllib3 only when it is touched.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .api import ApiResponse
from .credentials import PRODUCTION_URL, SANDBOX_URL, Credentials, Environment
from .errors import (
    AccessDenied,
    ConfigurationError,
    ConnectError,
    ConnectionLost,
    CredentialsError,
    EightyEightPayError,
    EnvironmentMismatch,
    InsecureTransport,
    InvalidCredentials,
    InvalidPolicy,
    MalformedCredentials,
    MalformedResponse,
    ManagerClosed,
    RateLimited,
    RequestTimeout,
    RetryableError,
    ServerError,
    TLSError,
    TransportError,
)
from .machine import TokenMachine
from .policy import Policy
from .tokens import Freshness, Token

if TYPE_CHECKING:
    from .adapters.sync import TokenManager

__version__ = "0.1.0"

__all__ = [
    "PRODUCTION_URL",
    "SANDBOX_URL",
    "AccessDenied",
    "ApiResponse",
    "ConfigurationError",
    "ConnectError",
    "ConnectionLost",
    "Credentials",
    "CredentialsError",
    "EightyEightPayError",
    "Environment",
    "EnvironmentMismatch",
    "Freshness",
    "InsecureTransport",
    "InvalidCredentials",
    "InvalidPolicy",
    "MalformedCredentials",
    "MalformedResponse",
    "ManagerClosed",
    "Policy",
    "RateLimited",
    "RequestTimeout",
    "RetryableError",
    "ServerError",
    "TLSError",
    "Token",
    "TokenMachine",
    "TokenManager",
    "TransportError",
]

_LAZY = {"TokenManager": "eightyeightpay.adapters.sync"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'eightyeightpay' has no attribute {name!r}")
