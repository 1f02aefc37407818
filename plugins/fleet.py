"""What a fleet store is: the contract Redis, Memcached and third-party stores fulfil.

A fleet store keeps one process-wide local slot per key (like the memory store: the cached
path never leaves the process) and, shared by the whole fleet, the token, the lock, the
rate budget and the cool-down. The core decides when to touch them; the drivers call the
methods below to perform its effects. A store never raises to a caller: a failing store is
a :class:`~eightyeightpay.fleet.StoreFault` and the process carries on alone, logging the
outage once and its end once.
"""

from __future__ import annotations

import logging
import sys
import threading
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from eightyeightpay.credentials import CacheKey, Credentials
from eightyeightpay.errors import ConfigurationError
from eightyeightpay.fleet import BudgetRequest, Purpose, StoredToken, encode_stored
from eightyeightpay.machine import TokenMachine
from eightyeightpay.policy import Policy, Rng
from eightyeightpay.ports import AsyncFleetOperations, FleetOperations, ReadValue, Reserved

from .memory import MemoryStore, Slot
from .process import ProcessBound

_T = TypeVar("_T")

__all__ = [
    "DEFAULT_STORE_DEADLINE",
    "ENCRYPTION_KEY_VARIABLE",
    "FleetStore",
    "InThreads",
    "Sealer",
    "StoreHealth",
    "fault_detail",
    "misconfiguration",
    "tls_failure",
]

DEFAULT_STORE_DEADLINE = 1.5
"""Seconds a manager lets one store call take, unless the store sets its own ``deadline``."""

ENCRYPTION_KEY_VARIABLE = "EIGHTY_EIGHT_PAY_STORE_KEY"
"""A Fernet key (``Fernet.generate_key()``); when set, fleet stores encrypt tokens at rest."""

log = logging.getLogger("eightyeightpay")


class StoreHealth:
    """Logs a store's outage once when it starts and once when it ends, never per call.

    A fault that is a configuration mistake (see :func:`misconfiguration`) is logged at
    ERROR, once per outage, with its fix; other faults at WARNING.
    """

    def __init__(
        self,
        name: str,
        classify: Callable[[BaseException], str | None] | None = None,
    ) -> None:
        self._name = name
        self._classify = classify or misconfiguration
        self._lock = threading.Lock()
        self.healthy = True
        """False from the first failure until the next success."""
        self.outages = 0
        """How many outages were seen."""
        self.detail = ""
        """What the last failure was (no secret), while not :attr:`healthy`."""
        self.fix = ""
        """How to fix the configuration mistake of the current outage, if it is one."""

    def misconfiguration(self, error: BaseException) -> str | None:
        """The fix for ``error`` when it is a configuration mistake of this store, else None."""
        return self._classify(error)

    def failed(self, detail: str, fix: str | None = None) -> None:
        """Note a failure (``fix``: it is a configuration mistake); log what starts an outage.

        A configuration mistake is logged at ERROR with its fix, once per outage, also when
        the outage started as an ordinary failure (the store came back with a password).
        """
        with self._lock:
            starting, self.healthy = self.healthy, False
            if starting:
                self.outages += 1
                self.fix = ""
            first_mistake = fix is not None and not self.fix
            if fix is not None:
                self.fix = fix
            self.detail = detail
        if first_mistake:
            log.error(
                "%s store refused this process's configuration (%s): %s. Until it is fixed, "
                "each process serves from its local cache and keeps to a share of the rate "
                "limits",
                self._name,
                detail,
                fix,
            )
        elif starting:
            log.warning(
                "%s store unavailable (%s); each process serves from its local cache and "
                "single flight until it is back",
                self._name,
                detail,
            )

    def succeeded(self) -> None:
        """Note a success; log it if it ends an outage."""
        if self.healthy:
            return
        with self._lock:
            ending, self.healthy = not self.healthy, True
            self.detail, self.fix = "", ""
        if ending:
            log.warning("%s store reachable again; the fleet shares tokens again", self._name)


def tls_failure(error: BaseException) -> str | None:
    """What to check when ``error`` (or an exception it wraps) is a TLS failure, else None.

    A certificate that was not verified; a TLS error; or a TLS handshake that got no answer,
    which is what a TLS client meets on a plain port (a ``rediss://`` URL pointing at a
    Redis without TLS: the server waits for a command and never answers the handshake).
    A fresh connection cures none of them, and neither does waiting for a failover.
    """
    ssl = sys.modules.get("ssl")  # not imported: no TLS connection, so no TLS failure
    seen: BaseException | None = error
    for _ in range(8):
        if seen is None:
            break
        text = str(seen)[:200]
        if (
            ssl is not None and isinstance(seen, ssl.SSLCertVerificationError)
        ) or "CERTIFICATE_VERIFY_FAILED" in text:
            return (
                "TLS failure, the server's certificate was not verified; give the client the CA "
                "that signed it (ssl_ca_certs=... or ?ssl_ca_certs=... in a rediss:// URL)"
            )
        if isinstance(seen, OSError) and "handshake operation timed out" in text:
            return (
                "TLS failure, the server did not answer the TLS handshake; check that it speaks "
                "TLS on this port (a rediss:// URL to a plain Redis port waits like this)"
            )
        if (ssl is not None and isinstance(seen, ssl.SSLError)) or "SSL" in text:
            return (
                "TLS failure; check that the server speaks TLS on this port (rediss://) and the "
                "certificate settings"
            )
        seen = seen.__cause__ or seen.__context__
    return None


def _chain(error: BaseException) -> list[BaseException]:
    """``error`` and the exceptions it was raised from or during (at most 8)."""
    chain: list[BaseException] = []
    seen: BaseException | None = error
    while seen is not None and len(chain) < 8:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    return chain


def misconfiguration(error: BaseException) -> str | None:
    """The fix when a store client's ``error`` is a configuration mistake, else None.

    What no failover or restart cures: a TLS file that is missing or unreadable, a server
    certificate not signed by the CA given, an option the client refuses (a ``TypeError``
    when it connects: a TLS option on a plain ``redis://`` URL). Stores add their own
    (:meth:`FleetStore.misconfiguration`). The fix names settings, never their values.
    """
    import ssl  # here, on a failure only: building a store does not load ssl

    for seen in _chain(error):
        if isinstance(seen, FileNotFoundError | PermissionError | IsADirectoryError):
            return (
                "a file the store client was given (ssl_ca_certs, ssl_certfile, ssl_keyfile) is "
                "missing or unreadable; correct the path in the URL or the client's options"
            )
        if isinstance(seen, ssl.SSLCertVerificationError):
            return (
                "the server's certificate was not verified; give the client the CA that signed "
                "it (ssl_ca_certs=... or ?ssl_ca_certs=... in a rediss:// URL)"
            )
        if isinstance(seen, TypeError):
            return (
                "the store client refused one of its options; check the URL's query "
                "parameters (TLS options such as ssl_ca_certs need a rediss:// URL)"
            )
    return None


def fault_detail(error: BaseException) -> str:
    """What a store failure was, for the outage log line, without any secret.

    The exception's type only (a message may quote a URL with its password), except that a
    TLS failure says it is one and what to check (:func:`tls_failure`), also when a client
    wrapped it.
    """
    hint = tls_failure(error)
    return f"{type(error).__name__}: {hint}" if hint is not None else type(error).__name__


async def _to_thread(function: Callable[..., _T], *args: object) -> _T:
    import asyncio  # here: a threaded manager, which imports this module, never loads asyncio

    return await asyncio.to_thread(function, *args)


class InThreads:
    """A store's blocking operations for asyncio, each run in a worker thread.

    For stores without an asyncio client (pymemcache), or given only a blocking client. A
    runtime with worker threads of its own (trio) overrides :meth:`_run`.
    """

    def __init__(self, operations: FleetOperations) -> None:
        self._operations = operations

    async def _run(self, method: Callable[..., _T], *args: Any) -> _T:
        """Run the blocking ``method(*args)`` off the event loop."""
        return await _to_thread(method, *args)

    async def read(self, key: CacheKey) -> ReadValue:
        """See :meth:`~eightyeightpay.ports.FleetOperations.read`."""
        return await self._run(self._operations.read, key)

    async def acquire(self, key: CacheKey, owner: str, ttl: float) -> bool:
        """See :meth:`~eightyeightpay.ports.FleetOperations.acquire`."""
        return await self._run(self._operations.acquire, key, owner, ttl)

    async def extend(self, key: CacheKey, owner: str, ttl: float) -> bool:
        """See :meth:`~eightyeightpay.ports.FleetOperations.extend`."""
        return await self._run(self._operations.extend, key, owner, ttl)

    async def reserve(self, key: CacheKey, request: BudgetRequest) -> Reserved:
        """See :meth:`~eightyeightpay.ports.FleetOperations.reserve`."""
        return await self._run(self._operations.reserve, key, request)

    async def join(self, key: CacheKey, member: str, ttl: float) -> int:
        """See :meth:`~eightyeightpay.ports.FleetOperations.join`."""
        return await self._run(self._operations.join, key, member, ttl)

    async def spent(
        self, key: CacheKey, purpose: Purpose, minute_span: float, hour_span: float
    ) -> tuple[int, int]:
        """See :meth:`~eightyeightpay.ports.FleetOperations.spent`."""
        return await self._run(self._operations.spent, key, purpose, minute_span, hour_span)

    async def write(self, key: CacheKey, token: StoredToken, ttl: float) -> None:
        """See :meth:`~eightyeightpay.ports.FleetOperations.write`."""
        await self._run(self._operations.write, key, token, ttl)

    async def cool_down(self, key: CacheKey, seconds: float) -> None:
        """See :meth:`~eightyeightpay.ports.FleetOperations.cool_down`."""
        await self._run(self._operations.cool_down, key, seconds)

    async def release(self, key: CacheKey, owner: str) -> None:
        """See :meth:`~eightyeightpay.ports.FleetOperations.release`."""
        await self._run(self._operations.release, key, owner)


class Sealer:
    """Encrypts stored tokens at rest (Fernet) when a key is configured; else passes them."""

    def __init__(self, key: str | bytes | None) -> None:
        self._fernet: Any = None
        if key:
            try:
                from cryptography.fernet import Fernet
            except ImportError:  # pragma: no cover - the redis extra installs it
                raise ConfigurationError(
                    "Encrypting tokens at rest needs the 'cryptography' package: "
                    "pip install cryptography (the redis and memcached extras include it)."
                ) from None
            try:
                self._fernet = Fernet(key)
            except (ValueError, TypeError):
                raise ConfigurationError(
                    f"{ENCRYPTION_KEY_VARIABLE} is not a Fernet key (32 url-safe base64 bytes, "
                    "as cryptography.fernet.Fernet.generate_key() makes)."
                ) from None

    def seal(self, token: StoredToken) -> bytes:
        """The stored form of ``token``, encrypted when a key is set."""
        data = encode_stored(token)
        return self._fernet.encrypt(data) if self._fernet is not None else data

    def open(self, raw: bytes | None) -> bytes | None:
        """The plain stored form, or None for a value this key did not seal."""
        if raw is None or self._fernet is None:
            return raw
        from cryptography.fernet import InvalidToken

        try:
            opened: bytes = self._fernet.decrypt(raw)
        except (InvalidToken, TypeError, ValueError):
            return None  # not ours, or written unencrypted: ignored, then replaced
        return opened


class FleetStore(ProcessBound):
    """Base of the fleet stores: local slots whose machines run the fleet protocol.

    A forked child takes a new fencing identity (:attr:`instance`), so that a lock taken by
    the child is never released as the parent's, nor the reverse.
    """

    name = "fleet"
    shared = True
    deadline = DEFAULT_STORE_DEADLINE
    """Seconds a manager lets one call of this store take; past it the call counts as an
    outage (the process works alone) whatever the call is still doing."""

    def __init__(self) -> None:
        super().__init__()
        # A fleet store's first connection is made inside a store call, within its deadline
        # (1.5 s): TLS is loaded now, so that a slow first import of ssl is not taken for an
        # outage. The memory store (and so a manager's construction) never loads it.
        import ssl  # noqa: F401

        self._local = MemoryStore()
        self.instance = uuid.uuid4().hex[:12]
        """This process's name in lock fencing values."""
        self.health = StoreHealth(self.name, self.misconfiguration)
        """Outage tracking for this store."""

    def misconfiguration(self, error: BaseException) -> str | None:
        """The fix when ``error`` is a configuration mistake (see :func:`misconfiguration`).

        A store adds its client's own (a refused password, a database that does not exist)
        and calls this for the rest; the fix never holds a secret.
        """
        return misconfiguration(error)

    def _start_afresh(self) -> None:
        self.instance = uuid.uuid4().hex[:12]
        for slot in self._local.slots:
            slot.machine.instance = self.instance
        self.health._lock = threading.Lock()  # managers hold this object: keep it

    def slot(self, credentials: Credentials, policy: Policy, rng: Rng) -> Slot:
        """The process-wide slot for ``credentials``, coordinated through this store."""
        return self._local.slot(
            credentials,
            policy,
            rng,
            machine=lambda: TokenMachine(
                credentials,
                policy,
                rng,
                fleet=True,
                instance=self.instance,
                store_deadline=self.deadline,
            ),
        )

    def operations(self) -> FleetOperations:
        """The blocking operations."""
        raise NotImplementedError

    def async_operations(self) -> AsyncFleetOperations:
        """The asyncio operations."""
        raise NotImplementedError
