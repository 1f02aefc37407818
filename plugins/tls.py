"""What both HTTP transports share: the verifying TLS context and telling TLS failures apart."""

from __future__ import annotations

import ssl

__all__ = ["IDLE_REUSE_SECONDS", "MAX_BODY_BYTES", "tls_context", "tls_failure"]

MAX_BODY_BYTES = 4 * 1024 * 1024
"""Longest response body read; 88Pay's answers are a few hundred bytes."""
IDLE_REUSE_SECONDS = 4.0
"""An idle kept-alive connection older than this is closed rather than reused."""

_TORN_DOWN = (
    ssl.SSLWantReadError,
    ssl.SSLWantWriteError,
    ssl.SSLSyscallError,
    ssl.SSLEOFError,
    ssl.SSLZeroReturnError,
)


def tls_context(ca_bundle: str | None = None) -> ssl.SSLContext:
    """A verifying TLS context: the system trust store, or only ``ca_bundle`` when given."""
    context = ssl.create_default_context(cafile=ca_bundle)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def tls_failure(error: BaseException) -> str | None:
    """Why the TLS handshake was refused (trust, host name, protocol), if that is what failed.

    A connection torn down mid-handshake (a reset, an EOF) is not a TLS failure: None.
    The error, its cause and its context are examined, as event loops chain them.
    """
    for reason in (error, error.__cause__, error.__context__):
        if isinstance(reason, ssl.SSLError) and not isinstance(reason, _TORN_DOWN):
            why = getattr(reason, "verify_message", None) or getattr(reason, "reason", None)
            return str(why) if why else "handshake failed"
    return None
