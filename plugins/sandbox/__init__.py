"""A stateful, faithful local emulator of the 88Pay API.

:class:`Sandbox` answers like the sandbox host: ES256 tokens that expire, session pairing,
the per-merchant rate limits, the 401/403 cases, charges, balances, injected faults and
counters. Serve it in-process with :class:`SandboxTransport` (deterministic with a
:class:`FakeClock`) or over loopback HTTP/HTTPS with :class:`SandboxServer`.
"""

from .clock import FakeClock
from .emulator import (
    API_RATE_LIMITS,
    BALANCE_PATH,
    CHARGES_PATH,
    DEFAULT_ACCOUNTS,
    DEFAULT_API_KEY,
    DEFAULT_MERCHANT_ID,
    DEFAULT_TOKEN_LIFETIME,
    IP_BLOCKED_API_KEY,
    IP_BLOCKED_MERCHANT_ID,
    KYC_PENDING_API_KEY,
    KYC_PENDING_MERCHANT_ID,
    STAT_NAMES,
    SUSPENDED_API_KEY,
    SUSPENDED_MERCHANT_ID,
    TOKEN_PATH,
    TOKEN_RATE_LIMITS,
    Account,
    AccountStatus,
    ConnectionFault,
    Fault,
    FaultKind,
    RateLimit,
    Sandbox,
    SandboxReply,
    mask_api_key,
)
from .server import CONTROL_PREFIX, SandboxServer
from .tls import CA_COMMON_NAME, DEFAULT_HOSTNAMES, TestCertificates, make_test_ca
from .transport import SandboxTransport

__all__ = [
    "API_RATE_LIMITS",
    "BALANCE_PATH",
    "CA_COMMON_NAME",
    "CHARGES_PATH",
    "CONTROL_PREFIX",
    "DEFAULT_ACCOUNTS",
    "DEFAULT_API_KEY",
    "DEFAULT_HOSTNAMES",
    "DEFAULT_MERCHANT_ID",
    "DEFAULT_TOKEN_LIFETIME",
    "IP_BLOCKED_API_KEY",
    "IP_BLOCKED_MERCHANT_ID",
    "KYC_PENDING_API_KEY",
    "KYC_PENDING_MERCHANT_ID",
    "STAT_NAMES",
    "SUSPENDED_API_KEY",
    "SUSPENDED_MERCHANT_ID",
    "TOKEN_PATH",
    "TOKEN_RATE_LIMITS",
    "Account",
    "AccountStatus",
    "ConnectionFault",
    "FakeClock",
    "Fault",
    "FaultKind",
    "RateLimit",
    "Sandbox",
    "SandboxReply",
    "SandboxServer",
    "SandboxTransport",
    "TestCertificates",
    "make_test_ca",
    "mask_api_key",
]
