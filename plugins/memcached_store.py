"""The ``memcached`` store: the fleet contract as far as memcached allows it.

What is shared, and how:

- **Keys** are those of the redis store (:class:`~eightyeightpay.plugins.redis_store.RedisKeys`):
  the namespace, then a tag of environment, merchant and API-key fingerprint. They never hold
  the API key and are checked against memcached's rules (at most 250 bytes, no spaces or
  control characters).
- **Token.** memcached's classic protocol cannot say how long a key has left, so the value
  carries the token's remaining seconds *at write time* and the writer's wall-clock time
  (``time.time()``); a reader computes ``remaining - (its_wall_now - written_wall)``, never
  more than ``remaining``. Unlike Redis, **hosts' wall clocks must agree to within the
  margin** (10 s by default): a reader whose clock is ``d`` seconds ahead sees the token
  ``d`` seconds older than it is (an early, extra refresh); one whose clock is ``d`` seconds
  behind sees it up to ``d`` seconds younger, so it may use it up to ``d`` seconds past the
  margin. With an encryption key the token part of the value is a Fernet token, as in Redis.
- **Cool-down** after a 429: the same shape (seconds and the writer's wall time) and the
  same clock caveat.
- **Lock:** ``add`` (atomic set-if-absent) with an expiry. memcached counts expiries in whole
  seconds on a clock that ticks once a second, so an item asked to live ``n`` seconds lives
  between ``n - 1`` and ``n``: the lock's expiry is the TTL rounded up plus one second.
  Release is ``gets`` (value and CAS id), compare the value with the owner, then the meta
  command ``md <key> C<cas>``, which deletes only the item with that CAS id: a lock that
  expired and was taken by another flight since the ``gets`` has a new CAS id and survives.
  On a server without meta commands (memcached before 1.6) release falls back to a plain
  ``delete`` after the compare: if the lock expires and another flight takes it between the
  ``gets`` and the ``delete`` (one round trip), that flight's lock is deleted.
- **Budgets** (token requests and API calls, one value each): no sorted sets, so the fleet's
  send times are one value (the budget's epoch, ``@<epoch>``, then space-separated wall
  times) updated with ``gets``/``cas`` (``add`` when absent), retried on conflict; entries
  older than the long window are pruned. The arithmetic is
  :class:`~eightyeightpay.fleet.StoreBudget`'s, as the redis script's, but the times come
  from **the local wall clock**, not the server's: a host whose clock is ``d`` seconds
  behind records sends that leave the others' windows ``d`` seconds early. A restarted
  memcached (or an evicted value) has no epoch: the next reservation names a new one and
  each process puts its own recent sends back.
- **Eviction:** memcached may evict any item under memory pressure before it expires. A lost
  token costs a refresh; a lost lock may let a second flight send (each one still passes the
  budget); a lost budget value forgets the fleet's sends (88Pay's own 429 then applies, and
  the cool-down is shared). Give the store a memcached that is not near its memory limit.
- **Degraded mode:** every pymemcache or socket error propagates out of the operations; the
  driver turns it into a store fault, logs the outage once and the process works alone.

pymemcache has no asyncio client: :meth:`MemcachedStore.async_operations` runs the blocking
operations in a worker thread with :func:`asyncio.to_thread` (trio runs them off its loop
itself). Several servers go through pymemcache's ``HashClient``; a connection error is tried
once more on fresh connections before it counts. Waiting processes poll the token key
every ``fleet_poll_interval``, as with Redis.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import attrs

from eightyeightpay.credentials import CacheKey
from eightyeightpay.errors import ConfigurationError
from eightyeightpay.fleet import (
    API_BUDGET,
    BudgetRequest,
    Purpose,
    StoreBudget,
    StoredToken,
)
from eightyeightpay.governor import RateWindow
from eightyeightpay.ports import ReadValue, Reserved

from .fleet import ENCRYPTION_KEY_VARIABLE, FleetStore, InThreads, Sealer
from .hookspecs import StoreFactory, hookimpl
from .process import PerProcessClient
from .redis_store import RedisKeys

__all__ = [
    "MEMCACHED_SERVER_VARIABLE",
    "MemcachedContention",
    "MemcachedKeys",
    "MemcachedStore",
]

MEMCACHED_SERVER_VARIABLE = "EIGHTY_EIGHT_PAY_MEMCACHED"
"""Where the store connects when no server is given (``host:port``; default 127.0.0.1:11211)."""

MAX_KEY_BYTES = 250
"""memcached's limit on a key's length."""
CAS_ATTEMPTS = 8
"""Tries of the budget's read-modify-write before giving up on contention."""
_MAX_RELATIVE_EXPIRY = 30 * 24 * 3600 - 1  # longer expiries are read as Unix timestamps


class MemcachedContention(Exception):
    """The budget value kept changing under ``gets``/``cas``; the flight works alone."""


@attrs.frozen
class MemcachedKeys:
    """The memcached keys of one cache key: the redis store's names, checked for memcached."""

    token: str
    """The token, its remaining seconds and the writer's wall time."""
    lock: str
    """The single-flight lock (the owner's fencing value)."""
    budget: str
    """Wall times of the fleet's token requests in the last hour."""
    cooldown: str
    """The fleet's 429 cool-down: its seconds and the writer's wall time."""
    members: str
    """The fleet's processes and the wall time each one's membership ends (JSON)."""
    api_budget: str
    """The budget's epoch and the wall times of the fleet's API calls."""

    @classmethod
    def of(cls, namespace: str, key: CacheKey) -> MemcachedKeys:
        """The keys for ``key`` under ``namespace``; ValueError if memcached would refuse one."""
        keys = cls(*attrs.astuple(RedisKeys.of(namespace, key)))
        for name in attrs.astuple(keys):
            _check_key(name)
        return keys

    def budget_of(self, purpose: Purpose) -> str:
        """The budget of ``purpose``."""
        return self.api_budget if purpose == API_BUDGET else self.budget


def _members(raw: object) -> dict[str, float]:
    """The members a stored value lists; garbage lists none."""
    try:
        found = json.loads(raw) if isinstance(raw, bytes) else {}
    except ValueError:
        return {}
    if not isinstance(found, dict):
        return {}
    return {
        str(m): float(until)
        for m, until in found.items()
        if isinstance(until, int | float) and not isinstance(until, bool)
    }


def _check_key(name: str) -> None:
    data = name.encode("utf-8")
    if len(data) > MAX_KEY_BYTES:
        raise ValueError(f"a memcached key is longer than {MAX_KEY_BYTES} bytes")
    if not data.isascii() or any(byte <= 32 or byte == 127 for byte in data):
        raise ValueError("a memcached key may hold no spaces, control or non-ASCII characters")


def _expiry(seconds: float) -> int:
    """The whole-second memcached expiry that keeps an item at least ``seconds``."""
    return min(_MAX_RELATIVE_EXPIRY, max(1, math.ceil(seconds)) + 1)


def _stamp(seconds: float, wall: float) -> bytes:
    return b"%.3f:%.6f" % (seconds, wall)


def _number(text: bytes) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _left(stamp: bytes, wall_now: float) -> float | None:
    """Seconds left of a ``seconds:written_wall`` stamp, never more than it was written with."""
    parts = stamp.split(b":")
    if len(parts) != 2:
        return None
    seconds, written = _number(parts[0]), _number(parts[1])
    if seconds is None or written is None or seconds <= 0:
        return None
    return seconds - max(0.0, wall_now - written)


def _budget(raw: Any) -> StoreBudget:
    """A budget value (``@<epoch> t1 t2 ...``); without an epoch, or garbage: a lost budget."""
    parts = raw.split() if isinstance(raw, bytes) else []
    if not parts or not parts[0].startswith(b"@"):
        return StoreBudget()
    times = [_number(part) for part in parts[1:]]
    return StoreBudget(
        parts[0][1:].decode("ascii", "replace"),
        RateWindow(tuple(sorted(t for t in times if t is not None))),
    )


def _budget_value(budget: StoreBudget) -> bytes:
    return b" ".join([b"@" + budget.epoch.encode(), *(b"%.6f" % t for t in budget.sends.sends)])


def _fresh(client: Any) -> None:
    """Drop ``client``'s idle connections (all servers of a HashClient).

    The next call then connects anew instead of meeting another socket that a restarted
    server closed.
    """
    pool = getattr(client, "client_pool", None)
    if pool is not None:
        pool.clear()
    inner = getattr(client, "clients", None)
    if isinstance(inner, dict):
        for each in list(inner.values()):
            _fresh(each)
    elif pool is None and callable(getattr(client, "close", None)):
        client.close()


class _Operations:
    """The store's blocking operations over a pymemcache client.

    The client is a ``PooledClient``, a ``HashClient`` across several servers, or one you built.

    An operation that fails on the connection (reset, timeout, a server restarted under a
    pooled socket) is tried once more on fresh connections before it counts as a fault.
    """

    def __init__(
        self,
        client: Any,
        namespace: str,
        sealer: Sealer,
        wall_clock: Callable[[], float],
        *,
        owned: bool = True,
    ) -> None:
        from pymemcache.exceptions import (  # type: ignore[import-untyped]
            MemcacheUnexpectedCloseError,
        )

        self._client = client
        self._namespace = namespace
        self._sealer = sealer
        self._wall = wall_clock
        self._owned = owned
        self._meta = True  # the server understands meta commands (md ... C<cas>)
        self._retryable = (OSError, MemcacheUnexpectedCloseError)

    def _keys(self, key: CacheKey) -> MemcachedKeys:
        return MemcachedKeys.of(self._namespace, key)

    def _once_more(self, call: Callable[..., Any], *args: Any) -> Any:
        try:
            return call(*args)
        except self._retryable:
            _fresh(self._client)
            return call(*args)

    def read(self, key: CacheKey) -> ReadValue:
        result: ReadValue = self._once_more(self._read, key)
        return result

    def acquire(self, key: CacheKey, owner: str, ttl: float) -> bool:
        return bool(self._once_more(self._acquire, key, owner, ttl))

    def extend(self, key: CacheKey, owner: str, ttl: float) -> bool:
        return bool(self._once_more(self._extend, key, owner, ttl))

    def reserve(self, key: CacheKey, request: BudgetRequest) -> Reserved:
        result: Reserved = self._once_more(self._reserve, key, request)
        return result

    def spent(
        self, key: CacheKey, purpose: Purpose, minute_span: float, hour_span: float
    ) -> tuple[int, int]:
        """The fleet's sends of ``purpose`` in the windows given (the budget's wall times)."""
        raw = self._once_more(self._client.get, self._keys(key).budget_of(purpose))
        return _budget(raw).spent(self._wall(), minute_span, hour_span)

    def join(self, key: CacheKey, member: str, ttl: float) -> int:
        """Register ``member`` for ``ttl`` seconds (this host's wall clock); the live count."""
        return int(self._once_more(self._join, key, member, ttl))

    def write(self, key: CacheKey, token: StoredToken, ttl: float) -> None:
        self._once_more(self._write, key, token, ttl)

    def cool_down(self, key: CacheKey, seconds: float) -> None:
        self._once_more(self._cool_down, key, seconds)

    def release(self, key: CacheKey, owner: str) -> None:
        self._once_more(self._release, key, owner)

    def _read(self, key: CacheKey) -> ReadValue:
        keys = self._keys(key)
        values = self._client.get_many([keys.token, keys.cooldown])
        now = self._wall()
        cooldown = max(0.0, _left(values.get(keys.cooldown) or b"", now) or 0.0)
        raw = values.get(keys.token)
        if not isinstance(raw, bytes):
            return None, 0.0, cooldown
        seconds, _, rest = raw.partition(b":")
        written, _, sealed = rest.partition(b":")
        ttl = _left(seconds + b":" + written, now)
        if ttl is None or ttl <= 0:
            return None, 0.0, cooldown
        return self._sealer.open(sealed), ttl, cooldown

    def _acquire(self, key: CacheKey, owner: str, ttl: float) -> bool:
        added = self._client.add(
            self._keys(key).lock, owner.encode(), expire=_expiry(ttl), noreply=False
        )
        return bool(added)

    def _extend(self, key: CacheKey, owner: str, ttl: float) -> bool:
        lock = self._keys(key).lock
        held, cas = self._client.gets(lock)
        if held != owner.encode() or cas is None:
            return False
        # cas with the same value: only the lock this owner still holds gets the new expiry.
        return bool(self._client.cas(lock, held, cas, expire=_expiry(ttl), noreply=False))

    def _reserve(self, key: CacheKey, request: BudgetRequest) -> Reserved:
        name = self._keys(key).budget_of(request.purpose)
        expire = _expiry(request.hour_span + 100)
        for _ in range(CAS_ATTEMPTS):
            raw, cas = self._client.gets(name)
            before = _budget(raw)
            after, wait = before.reserve(request, self._wall(), os.urandom(8).hex())
            if after == before:
                return wait, after.epoch
            value = _budget_value(after)
            if cas is None:
                stored = self._client.add(name, value, expire=expire, noreply=False)
            else:
                stored = self._client.cas(name, value, cas, expire=expire, noreply=False)
            if stored:
                return wait, after.epoch
        raise MemcachedContention("the fleet budget kept changing during the update")

    def _join(self, key: CacheKey, member: str, ttl: float) -> int:
        name = self._keys(key).members
        for _ in range(CAS_ATTEMPTS):
            raw, cas = self._client.gets(name)
            now = self._wall()
            members = _members(raw)
            members = {m: until for m, until in members.items() if until > now}
            members[member] = now + ttl
            value = json.dumps(members).encode()
            expire = _expiry(max(members.values()) - now)  # the longest membership left
            if cas is None:
                stored = self._client.add(name, value, expire=expire, noreply=False)
            else:
                stored = self._client.cas(name, value, cas, expire=expire, noreply=False)
            if stored:
                return len(members)
        raise MemcachedContention("the fleet's members kept changing during the update")

    def _write(self, key: CacheKey, token: StoredToken, ttl: float) -> None:
        if ttl > 0:
            value = _stamp(ttl, self._wall()) + b":" + self._sealer.seal(token)
            self._client.set(self._keys(key).token, value, expire=_expiry(ttl), noreply=False)

    def _cool_down(self, key: CacheKey, seconds: float) -> None:
        if seconds > 0:
            value = _stamp(seconds, self._wall())
            self._client.set(
                self._keys(key).cooldown, value, expire=_expiry(seconds), noreply=False
            )

    def _release(self, key: CacheKey, owner: str) -> None:
        lock = self._keys(key).lock
        held, cas = self._client.gets(lock)
        if held != owner.encode() or cas is None:
            return
        if self._meta:
            from pymemcache.exceptions import MemcacheUnknownCommandError

            server = getattr(self._client, "_get_client", None)  # HashClient: the key's server
            client = server(lock) if server is not None else self._client
            try:
                # Deletes only the item with this CAS id: never a lock taken since the gets.
                client.raw_command(b"md " + lock.encode() + b" C" + bytes(cas))
                return
            except MemcacheUnknownCommandError:
                self._meta = False  # memcached < 1.6: best effort below
        self._client.delete(lock, noreply=False)

    def close(self) -> None:
        if self._owned:
            self._client.close()


def _parse_servers(servers: str | tuple[str, int] | list[Any]) -> list[tuple[str, int]]:
    if isinstance(servers, str):
        parsed = [_parse_server(part) for part in servers.split(",") if part.strip()]
    elif isinstance(servers, tuple):
        parsed = [_parse_server(servers)]
    else:
        parsed = [_parse_server(server) for server in servers]
    if not parsed:
        raise ConfigurationError("The memcached store needs at least one 'host:port' server.")
    return parsed


def _forget_inherited(client: Any) -> None:
    """Close a forked child's copies of the parent's pooled sockets (no pool lock, no quit)."""
    for each in getattr(client, "clients", {}).values() or [client]:  # a HashClient's servers
        pool = getattr(each, "client_pool", None)
        for connection in (*pool.free, *pool.used) if pool is not None else (each,):
            connection.close()


def _parse_server(server: str | tuple[str, int]) -> tuple[str, int]:
    if isinstance(server, tuple):
        host, port = server
    else:
        host, separator, port_text = server.strip().rpartition(":")
        if not separator or not port_text.isdigit():
            raise ConfigurationError(
                f"A memcached server is 'host:port' (as in {MEMCACHED_SERVER_VARIABLE}, "
                "several separated by commas), for example '127.0.0.1:11211'."
            )
        host, port = host.strip("[]"), int(port_text)
    if isinstance(host, str) and ("@" in host or "/" in host):
        # memcached's text protocol has no login: 'user:password@host' is a mistake, and the
        # store's repr and outage logs would show the password
        raise ConfigurationError(
            "A memcached server is 'host:port' only: memcached takes no user name or password "
            f"(a URL's user:password@ or scheme:// is not read; {MEMCACHED_SERVER_VARIABLE} "
            "is not shown, as it may hold a password). Use the host and port, and keep "
            "memcached on a private network."
        )
    if not host or not isinstance(port, int) or not 0 < port < 65536:
        raise ConfigurationError("A memcached server needs a host and a port from 1 to 65535.")
    return host, port


class MemcachedStore(FleetStore):
    """Tokens, the lock, the rate budget and the cool-down shared through memcached.

    ``MemcachedStore(server)`` with ``("host", port)``, ``"host:port"``, several servers
    (``"h1:11211,h2:11211"`` or a list), or a pymemcache client you built (``Client``,
    ``PooledClient``, ``HashClient``: yours, :meth:`close` leaves it open). With none,
    ``EIGHTY_EIGHT_PAY_MEMCACHED`` or ``127.0.0.1:11211``. Several servers are spread with
    pymemcache's ``HashClient`` (rendezvous hashing; a server that keeps failing is taken out
    for ``dead_timeout`` seconds and its keys move to the others). ``encryption_key`` (or
    ``EIGHTY_EIGHT_PAY_STORE_KEY``) encrypts tokens at rest; ``timeout`` is the socket
    timeout, and every call is also bounded by ``deadline``, enforced by the managers.
    ``wall_clock`` is the Unix time the store stamps and reads values with: hosts sharing a
    memcached must agree on it to within the policy's margin (see the module's notes).
    """

    name = "memcached"

    def __init__(
        self,
        server: str | tuple[str, int] | list[Any] | Any = None,
        *,
        namespace: str = "eightyeightpay",
        encryption_key: str | bytes | None = None,
        timeout: float = 0.5,
        wall_clock: Callable[[], float] = time.time,
        dead_timeout: float = 30.0,
    ) -> None:
        try:
            import pymemcache  # type: ignore[import-untyped]  # noqa: F401
        except ImportError:
            raise ConfigurationError(
                "The memcached store needs pymemcache: pip install 'eightyeightpay[memcached]'."
            ) from None
        try:
            _check_key(namespace)
        except ValueError as error:
            raise ConfigurationError(f"Bad memcached namespace: {error}.") from None
        if len(namespace) > 100:
            raise ConfigurationError("A memcached namespace is at most 100 characters.")
        super().__init__()
        self._client: Any = None
        if server is not None and not isinstance(server, str | tuple | list):
            if not callable(getattr(server, "gets", None)):
                raise ConfigurationError(
                    "MemcachedStore takes 'host:port', several of them, or a pymemcache client "
                    f"(Client, PooledClient, HashClient), not {type(server).__name__}."
                )
            self._client = server
            self.servers: list[tuple[str, int]] = []
        else:
            self.servers = _parse_servers(
                server or os.environ.get(MEMCACHED_SERVER_VARIABLE) or "127.0.0.1:11211"
            )
            """The memcached servers, as (host, port) pairs (empty for a client you passed)."""
        self.namespace = namespace
        """Prefix of every key."""
        self._sealer = Sealer(encryption_key or os.environ.get(ENCRYPTION_KEY_VARIABLE))
        self._timeout = timeout
        self._dead_timeout = dead_timeout
        self.deadline = 2 * timeout + 0.5
        """Seconds the managers let one store call take (one retry included)."""
        self._wall = wall_clock
        self._sync: _Operations | None = None
        self._lock = threading.Lock()

    @property
    def server(self) -> tuple[str, int] | None:
        """The first server (the only one, usually), as (host, port)."""
        return self.servers[0] if self.servers else None

    def _build(self) -> Any:
        options: dict[str, Any] = {
            "connect_timeout": self._timeout,
            "timeout": self._timeout,
            "no_delay": True,
            "default_noreply": False,
        }
        if len(self.servers) == 1:
            from pymemcache.client.base import PooledClient  # type: ignore[import-untyped]

            return PooledClient(self.servers[0], **options)
        from pymemcache.client.hash import HashClient  # type: ignore[import-untyped]

        return HashClient(
            self.servers,
            use_pooling=True,
            retry_attempts=2,
            retry_timeout=0,  # our one retry reaches the server at once, not a silent default
            dead_timeout=self._dead_timeout,
            **options,
        )

    def operations(self) -> _Operations:
        """The blocking operations over one client, shared by the process's threads."""
        with self._lock:
            if self._sync is None:
                owned = self._client is None
                client = PerProcessClient(self._build, _forget_inherited) if owned else self._client
                self._sync = _Operations(
                    client, self.namespace, self._sealer, self._wall, owned=owned
                )
            return self._sync

    def async_operations(self) -> InThreads:
        """The blocking operations run in worker threads (pymemcache has no asyncio client)."""
        return InThreads(self.operations())

    def keys(self, key: CacheKey) -> MemcachedKeys:
        """The memcached keys used for ``key``."""
        return MemcachedKeys.of(self.namespace, key)

    def close(self) -> None:
        """Close the connections of the client the store built (a client you passed stays open)."""
        with self._lock:
            if self._sync is not None:
                self._sync.close()
                self._sync = None

    def __repr__(self) -> str:
        servers = ",".join(f"{host}:{port}" for host, port in self.servers) or "client"
        return f"MemcachedStore(server='{servers}', namespace={self.namespace!r})"


_process_stores: dict[tuple[Any, ...], MemcachedStore] = {}
_process_lock = threading.Lock()


def _memcached_store(**options: Any) -> MemcachedStore:
    """The process's MemcachedStore for these options (``store="memcached"``)."""
    key = tuple(sorted(options.items()))
    with _process_lock:
        if key not in _process_stores:
            _process_stores[key] = MemcachedStore(**options)
        return _process_stores[key]


@hookimpl
def eightyeightpay_register_stores(register: Callable[[str, StoreFactory], None]) -> None:
    """Register the ``memcached`` store."""
    register("memcached", _memcached_store)
