"""What both HTTP transports share: TLS trust, telling TLS failures apart, pool limits.

``ssl`` is imported when a TLS context is first made (the first connection, or a
``ca_bundle`` checked), not with this module: a manager is built without it.
"""

from __future__ import annotations

import collections
import os
import sys
from typing import TYPE_CHECKING, Any

import attrs

from eightyeightpay.errors import ConfigurationError, MalformedResponse

from .process import OnEachChild, first_use

if TYPE_CHECKING:
    import ssl

__all__ = [
    "DEFAULT_MAX_CONNECTIONS",
    "IDLE_REUSE_SECONDS",
    "MAX_BODY_BYTES",
    "QUEUE_SHARE",
    "PoolStats",
    "TrustKey",
    "body_too_large",
    "ca_bundle_problem",
    "connection_cap",
    "shared_tls_context",
    "tls_context",
    "tls_failure",
    "trust_key",
]

MAX_BODY_BYTES = 4 * 1024 * 1024
"""Longest response body read; 88Pay's answers are a few hundred bytes."""


def body_too_large(status: int) -> MalformedResponse:
    """The error for an answer with ``status`` whose body ran past :data:`MAX_BODY_BYTES`.

    An answer came, so the request reached the server: ``may_have_been_processed`` is True
    whatever the status (a charge answered 200 with a huge body was made).
    """
    return MalformedResponse(
        f"the body is larger than {MAX_BODY_BYTES} bytes; the request was received and may "
        "have been processed",
        status=status,
        may_have_been_processed=True,
    )


IDLE_REUSE_SECONDS = 4.0
"""An idle kept-alive connection older than this is closed rather than reused."""

TrustKey = tuple[str | None, str | None, str | None]
"""What a TLS context trusts: the ``ca_bundle`` and the ``SSL_CERT_FILE``/``SSL_CERT_DIR``."""


def tls_context(ca_bundle: str | None = None) -> ssl.SSLContext:
    """A verifying TLS context: the system trust store, or only ``ca_bundle`` when given."""
    import ssl  # on the first TLS connection, not at import

    context = ssl.create_default_context(cafile=ca_bundle)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


_contexts: dict[TrustKey, ssl.SSLContext] = {}


def shared_tls_context(trust: TrustKey) -> ssl.SSLContext:
    """The process's verifying context for ``trust`` (see :func:`trust_key`), made once.

    Loading a trust store takes milliseconds; every pool with the same trust shares one
    context (an ``SSLContext`` may be used from any thread, and in a forked child).
    """
    _contexts_of_this_process.check_process()  # for a fork that skipped the at-fork hooks
    context = _contexts.get(trust)
    if context is None:
        context = _contexts[trust] = first_use(lambda: tls_context(trust[0]))
    return context


def _drop_the_parents_contexts() -> None:
    # A parent thread may have been inside OpenSSL with a context's lock held (a handshake
    # verifying a chain) when it forked: the child's first handshake would wait on it.
    _contexts.clear()


_contexts_of_this_process = OnEachChild(_drop_the_parents_contexts)


def tls_failure(error: BaseException) -> str | None:
    """Why the TLS handshake was refused (trust, host name, protocol), if that is what failed.

    A connection torn down mid-handshake (a reset, an EOF) is not a TLS failure: None.
    The error, its cause and its context are examined, as event loops chain them.
    """
    ssl = sys.modules.get("ssl")
    if ssl is None:  # never imported: no TLS connection was made, and nothing failed in one
        return None
    torn_down = (
        ssl.SSLWantReadError,
        ssl.SSLWantWriteError,
        ssl.SSLSyscallError,
        ssl.SSLEOFError,
        ssl.SSLZeroReturnError,
    )
    for reason in (error, error.__cause__, error.__context__):
        if isinstance(reason, ssl.SSLError) and not isinstance(reason, torn_down):
            why = getattr(reason, "verify_message", None) or getattr(reason, "reason", None)
            return str(why) if why else "handshake failed"
    return None


DEFAULT_MAX_CONNECTIONS = 10
"""Connections one process keeps open to one host at most, in use and idle together.

88Pay allows 60 API calls a minute per merchant; ten kept-alive connections carry far more
than that, and callers beyond the cap queue inside their deadline instead of opening more.
"""


def connection_cap(max_connections: int) -> int:
    """``max_connections`` checked: a positive integer, else a :class:`ConfigurationError`."""
    if not isinstance(max_connections, int) or max_connections < 1:
        raise ConfigurationError(
            f"max_connections must be a positive integer, not {max_connections!r}."
        )
    return max_connections


QUEUE_SHARE = 0.5
"""Share of a request's timeout a caller may spend waiting for a pooled connection.

Past it the caller gets :class:`~eightyeightpay.errors.RequestTimeout` saying the request was
never sent. A request that waited for a connection thus still has at least the rest of its
timeout to be answered in: a charge is never sent with too little time left to learn its
outcome (88Pay documents no idempotency key, so a charge that timed out after it was sent
must be looked up, never replayed).
"""


def trust_key(ca_bundle: str | None) -> TrustKey:
    """The trust settings in force now; connections are pooled only with the same ones.

    A ``ca_bundle`` is loaded here, when the transport is built, so that a path that does
    not exist or is not a PEM file of CA certificates is a
    :class:`~eightyeightpay.errors.ConfigurationError` at once, never a transport error at
    the first request.
    """
    key = (ca_bundle, os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))
    if ca_bundle is not None and key not in _contexts:
        problem = ca_bundle_problem(ca_bundle)
        if problem is not None:
            raise ConfigurationError(
                f"ca_bundle={ca_bundle!r} cannot be used: {problem}. Give ca_bundle= a PEM "
                "file of CA certificates (-----BEGIN CERTIFICATE-----), or leave it out to "
                "trust the system's CAs (or SSL_CERT_FILE)."
            )
    return key


def ca_bundle_problem(path: str) -> str | None:
    """Why ``path`` cannot be used as a CA bundle (a PEM file of CA certificates), or None."""
    import ssl  # the bundle is loaded into a TLS context: TLS is in use

    try:
        shared_tls_context((path, os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR")))
    except FileNotFoundError:
        return f"{path} does not exist"
    except IsADirectoryError:
        return f"{path} is a directory, not a PEM file"
    except PermissionError:
        return f"{path} cannot be read (permission denied)"
    except ssl.SSLError:
        return f"{path} holds no PEM CA certificate"
    except OSError as error:
        return f"{path} cannot be read ({error.strerror or type(error).__name__})"
    return None


@attrs.frozen
class PoolStats:
    """Counts of one host's connection pool in this process (one event loop, for async)."""

    cap: int
    """Most connections open at once, in use and idle together."""
    open: int
    """Connections open now."""
    in_use: int
    """Connections carrying an exchange now."""
    idle: int
    """Kept-alive connections waiting for the next exchange."""
    opened: int
    """Connections opened since the pool was made (each a TCP connect and TLS handshake)."""
    queued: int
    """Callers that had to wait for a connection because the pool was at its cap."""


class QueueOrder:
    """The pools' queue order: at most :attr:`cap` connections open, first come first served.

    Both transports' pools share it. A queued caller is a turn with ``connection`` and
    ``granted``; a pool says how a turn is woken (:meth:`_wake`: a lock released, a task
    unparked) and calls :meth:`_hand` with a connection given back, or None for a place to
    open one in.
    """

    cap: int
    """Most connections open at once, in use and idle."""
    open: int
    """Connections open now (idle and in use), and places handed out to open one."""
    opened: int
    """Connections opened, and places handed out to open one, since the pool was made."""
    turns: collections.deque[Any]
    """The callers queued, first first."""

    def raise_cap(self, cap: int) -> None:
        """Allow ``cap`` connections; the new places go to callers in the queue first."""
        self.cap = cap
        while self.turns and self.open < cap:
            self.open += 1
            self.opened += 1
            self._hand(None)

    def _hand(self, connection: object) -> None:
        turn = self.turns.popleft()
        turn.connection, turn.granted = connection, True
        self._wake(turn)

    def _wake(self, turn: Any) -> None:
        raise NotImplementedError
