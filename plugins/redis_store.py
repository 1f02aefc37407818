"""The ``redis`` store: one token, one lock and one rate budget for a whole fleet.

- The token is read together with its remaining TTL in one transaction: the store's clock
  measures its life, so hosts' clocks do not matter.
- The single-flight lock is ``SET NX PX`` with a fencing value; release compares and
  deletes in one script, so a slow holder never frees a lock someone else took since.
- The fleet's budgets (token requests: 10/minute and 100/hour; API calls: 60/minute and
  1,000/hour) are two sorted sets of send times taken from Redis's own ``TIME`` inside a
  script, each with an epoch key: a Redis restarted without persistence has neither, so
  the script names a new epoch and every process puts its own recent sends back.
- Keys share a Redis Cluster hash tag per environment, merchant and API-key fingerprint,
  and never contain the API key. With an encryption key the stored value is a Fernet token:
  no JWT text is kept in Redis.
- Waiting processes poll the token key every ``fleet_poll_interval`` (50 ms) while another
  process refreshes: a handful of GETs per refresh, about 74 refreshes an hour, and no
  long-lived subscriber connection to keep healthy.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any

import attrs

from eightyeightpay.credentials import CacheKey, Environment, environment_of
from eightyeightpay.errors import ConfigurationError
from eightyeightpay.fleet import API_BUDGET, BudgetRequest, Purpose, StoredToken
from eightyeightpay.ports import AsyncFleetOperations, ReadValue, Reserved

from .fleet import ENCRYPTION_KEY_VARIABLE, FleetStore, InThreads, Sealer, tls_failure
from .hookspecs import StoreFactory, hookimpl

__all__ = ["REDIS_URL_VARIABLE", "RedisKeys", "RedisStore"]

REDIS_URL_VARIABLE = "EIGHTY_EIGHT_PAY_REDIS_URL"
"""Where the store connects when no URL is given (default ``redis://127.0.0.1:6379/0``)."""

_BUDGET = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local hour = tonumber(ARGV[5])
local keep = math.ceil(hour) + 100
local epoch = redis.call('GET', KEYS[2])
if not epoch then
  epoch = ARGV[7]
  redis.call('SET', KEYS[2], epoch, 'EX', keep)
end
if epoch ~= ARGV[6] then return {'0', epoch} end
for i = 9, #ARGV do
  local age = tonumber(ARGV[i])
  if age >= 0 and age < hour then
    redis.call('ZADD', KEYS[1], string.format('%.6f', now - age), ARGV[3] .. ':' .. i)
  end
end
local wait = 0
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - hour)
for _, span in ipairs({{tonumber(ARGV[4]), tonumber(ARGV[1])}, {hour, tonumber(ARGV[2])}}) do
  local sends = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. string.format('%.6f', now - span[1]),
                           '+inf', 'WITHSCORES')
  local count = #sends / 2
  if count >= span[2] then
    local leaving = tonumber(sends[(count - span[2]) * 2 + 2])
    wait = math.max(wait, leaving + span[1] - now)
  end
end
if wait == 0 and ARGV[8] == '1' then
  redis.call('ZADD', KEYS[1], string.format('%.6f', now), ARGV[3])
end
redis.call('EXPIRE', KEYS[1], keep)
redis.call('EXPIRE', KEYS[2], keep)
return {string.format('%.6f', wait), epoch}
"""
"""Reserve a send (see FleetOperations.reserve): KEYS budget and its epoch; ARGV per_minute,
per_hour, a member name, minute_span, hour_span, the caller's epoch, a new epoch in case the
budget has none, '1' to record a send ('0': only the backfill), then the backfill's ages."""

_JOIN = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local ttl = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], string.format('%.6f', now + ttl), ARGV[1])
redis.call('EXPIRE', KEYS[1], math.ceil(ttl) + 1)
return redis.call('ZCARD', KEYS[1])
"""
"""Register a member until now + ttl (Redis's clock), drop lapsed ones, count the rest."""

_EXTEND = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""

_SPENT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local function since(span)
  return redis.call('ZCOUNT', KEYS[1], '(' .. string.format('%.6f', now - span), '+inf')
end
return {since(tonumber(ARGV[1])), since(tonumber(ARGV[2]))}
"""
"""The fleet's sends in the last ARGV[1] and ARGV[2] seconds, by Redis's clock (read only)."""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


_REDIS_MISTAKES = {
    "auth": (
        "Redis refused the password or user; put the right ones in the URL "
        "(redis://:PASSWORD@host:port/db, or redis://USER:PASSWORD@... for an ACL user) or in "
        f"{REDIS_URL_VARIABLE}"
    ),
    "acl": (
        "the Redis ACL user lacks a permission the store needs; grant it the key pattern "
        "and commands of the ACL recipe in docs/stores.md"
    ),
    "db": (
        "the database number at the end of the URL (/N) does not exist on this server; use "
        "one below its 'databases' setting (a Redis Cluster has only /0)"
    ),
}
"""Fixes for Redis's configuration mistakes (no value of the URL is ever repeated)."""


@attrs.frozen
class RedisKeys:
    """The keys of one cache key, sharing one hash tag. None of them holds the API key."""

    token: str
    """The token, with the TTL of its remaining life."""
    lock: str
    """The single-flight lock."""
    budget: str
    """Send times of the fleet's token requests (a sorted set)."""
    cooldown: str
    """Present while the fleet cools down after a 429."""
    members: str
    """The fleet's processes, each with the time its membership ends (a sorted set)."""
    api_budget: str
    """Send times of the fleet's API calls (a sorted set)."""

    def budget_of(self, purpose: Purpose) -> str:
        """The budget of ``purpose`` (its epoch is this name with ``:epoch`` appended)."""
        return self.api_budget if purpose == API_BUDGET else self.budget

    @classmethod
    def of(cls, namespace: str, key: CacheKey) -> RedisKeys:
        """The keys for ``key`` under ``namespace``."""
        environment = environment_of(key.base_url)
        if environment is Environment.CUSTOM:
            site = "custom-" + hashlib.sha256(key.base_url.encode()).hexdigest()[:10]
        else:
            site = environment.value
        tag = f"{{{site}:{key.merchant_id}:{key.key_fingerprint}}}"
        base = f"{namespace}:{tag}"
        return cls(
            f"{base}:token",
            f"{base}:lock",
            f"{base}:budget",
            f"{base}:cooldown",
            f"{base}:members",
            f"{base}:api-budget",
        )


def _seconds(milliseconds: Any) -> float:
    return max(0.0, float(milliseconds) / 1000.0) if isinstance(milliseconds, int) else 0.0


def _retryable() -> tuple[type[BaseException], ...]:
    """What a fresh connection may cure: a dropped or stale socket, a timeout, a demoted master."""
    from redis.exceptions import ConnectionError, ReadOnlyError, TimeoutError

    return (ConnectionError, TimeoutError, ReadOnlyError, OSError)


class _Operations:
    """The store's operations over a blocking redis-py client.

    The client is a ``Redis``, a ``RedisCluster`` or a Sentinel's ``master_for``.

    Each operation that fails on the connection (reset, timeout, ``READONLY`` from a master
    demoted by a failover) is tried once more on a fresh connection before it counts as a
    fault: the pool's idle connections are dropped first, so the retry cannot pick another
    stale one. ``MOVED``/``ASK`` are the cluster client's to follow, and a Sentinel client's
    fresh connection asks the sentinels for the new master.
    """

    def __init__(self, client: Any, namespace: str, sealer: Sealer, *, owned: bool) -> None:
        self._client = client
        self._namespace = namespace
        self._sealer = sealer
        self._owned = owned
        self._retryable = _retryable()
        self._budget = client.register_script(_BUDGET)
        self._spent = client.register_script(_SPENT)
        self._release = client.register_script(_RELEASE)
        self._extend = client.register_script(_EXTEND)
        self._join = client.register_script(_JOIN)

    def _keys(self, key: CacheKey) -> RedisKeys:
        return RedisKeys.of(self._namespace, key)

    def _once_more(self, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except self._retryable as error:
            if tls_failure(error) is not None:
                raise  # a fresh connection meets the same TLS trouble
            self._drop_idle()
            return call()

    def _drop_idle(self) -> None:
        pool = getattr(self._client, "connection_pool", None)
        if pool is not None:  # a cluster client keeps one pool per node and resets them itself
            pool.disconnect(inuse_connections=False)

    def _read(self, key: CacheKey) -> Any:
        keys = self._keys(key)
        pipe = self._client.pipeline(transaction=True)
        pipe.get(keys.token).pttl(keys.token).pttl(keys.cooldown)
        return pipe.execute()

    def read(self, key: CacheKey) -> ReadValue:
        raw, ttl, cooldown = self._once_more(lambda: self._read(key))
        return self._sealer.open(raw), _seconds(ttl), _seconds(cooldown)

    def acquire(self, key: CacheKey, owner: str, ttl: float) -> bool:
        lock = self._keys(key).lock
        return bool(self._once_more(lambda: self._client.set(lock, owner, nx=True, px=_ms(ttl))))

    def extend(self, key: CacheKey, owner: str, ttl: float) -> bool:
        lock = self._keys(key).lock
        return bool(self._once_more(lambda: self._extend(keys=[lock], args=[owner, _ms(ttl)])))

    def _reserve_call(self, key: CacheKey, request: BudgetRequest) -> Callable[[], Any]:
        """The budget script's call for ``request`` (the blocking or asyncio client's)."""
        budget = self._keys(key).budget_of(request.purpose)
        args = [
            request.per_minute,
            request.per_hour,
            _member(),
            request.minute_span,
            request.hour_span,
            request.epoch,
            _member(),
            "1" if request.send else "0",
            *(f"{age:.6f}" for age in request.backfill),
        ]
        return lambda: self._budget(keys=[budget, f"{budget}:epoch"], args=args)

    def reserve(self, key: CacheKey, request: BudgetRequest) -> Reserved:
        return _reserved(self._once_more(self._reserve_call(key, request)))

    def join(self, key: CacheKey, member: str, ttl: float) -> int:
        """Register ``member`` for ``ttl`` seconds (Redis's clock); the live members' count."""
        keys, args = [self._keys(key).members], [member, ttl]
        return int(self._once_more(lambda: self._join(keys=keys, args=args)))

    def _spent_call(
        self, key: CacheKey, purpose: Purpose, minute_span: float, hour_span: float
    ) -> Callable[[], Any]:
        keys = [self._keys(key).budget_of(purpose)]
        return lambda: self._spent(keys=keys, args=[minute_span, hour_span])

    def spent(
        self, key: CacheKey, purpose: Purpose, minute_span: float, hour_span: float
    ) -> tuple[int, int]:
        """The fleet's sends of ``purpose`` in the windows given, by Redis's clock."""
        minute, hour = self._once_more(self._spent_call(key, purpose, minute_span, hour_span))
        return int(minute), int(hour)

    def write(self, key: CacheKey, token: StoredToken, ttl: float) -> None:
        if ttl > 0:
            name, value = self._keys(key).token, self._sealer.seal(token)
            self._once_more(lambda: self._client.set(name, value, px=_ms(ttl)))

    def cool_down(self, key: CacheKey, seconds: float) -> None:
        if seconds > 0:
            name = self._keys(key).cooldown
            self._once_more(lambda: self._client.set(name, b"1", px=_ms(seconds)))

    def release(self, key: CacheKey, owner: str) -> None:
        lock = self._keys(key).lock
        self._once_more(lambda: self._release(keys=[lock], args=[owner]))

    def close(self) -> None:
        if self._owned:
            self._client.close()


class _AsyncOperations(_Operations):
    """The same operations over a ``redis.asyncio`` client, with the same one retry."""

    _initialized = False

    async def _aonce_more(self, call: Callable[[], Awaitable[Any]]) -> Any:
        if not self._initialized:
            # An asyncio cluster client must learn its nodes before its first transaction
            # (redis-py's transaction pipeline does not do it for a slot on another node).
            initialize = getattr(self._client, "initialize", None)
            if initialize is not None:
                await initialize()
            self._initialized = True
        try:
            return await call()
        except self._retryable as error:
            if tls_failure(error) is not None:
                raise  # a fresh connection meets the same TLS trouble
            pool = getattr(self._client, "connection_pool", None)
            if pool is not None:
                await pool.disconnect(inuse_connections=False)
            return await call()

    async def _aread(self, key: CacheKey) -> Any:
        keys = self._keys(key)
        pipe = self._client.pipeline(transaction=True)
        pipe.get(keys.token).pttl(keys.token).pttl(keys.cooldown)
        return await pipe.execute()

    async def read(self, key: CacheKey) -> ReadValue:  # type: ignore[override]
        raw, ttl, cooldown = await self._aonce_more(lambda: self._aread(key))
        return self._sealer.open(raw), _seconds(ttl), _seconds(cooldown)

    async def acquire(self, key: CacheKey, owner: str, ttl: float) -> bool:  # type: ignore[override]
        lock = self._keys(key).lock
        return bool(
            await self._aonce_more(lambda: self._client.set(lock, owner, nx=True, px=_ms(ttl)))
        )

    async def extend(self, key: CacheKey, owner: str, ttl: float) -> bool:  # type: ignore[override]
        lock = self._keys(key).lock
        return bool(
            await self._aonce_more(lambda: self._extend(keys=[lock], args=[owner, _ms(ttl)]))
        )

    async def reserve(self, key: CacheKey, request: BudgetRequest) -> Reserved:  # type: ignore[override]
        return _reserved(await self._aonce_more(self._reserve_call(key, request)))

    async def join(self, key: CacheKey, member: str, ttl: float) -> int:  # type: ignore[override]
        keys, args = [self._keys(key).members], [member, ttl]
        return int(await self._aonce_more(lambda: self._join(keys=keys, args=args)))

    async def spent(  # type: ignore[override]
        self, key: CacheKey, purpose: Purpose, minute_span: float, hour_span: float
    ) -> tuple[int, int]:
        call = self._spent_call(key, purpose, minute_span, hour_span)
        minute, hour = await self._aonce_more(call)
        return int(minute), int(hour)

    async def write(self, key: CacheKey, token: StoredToken, ttl: float) -> None:  # type: ignore[override]
        if ttl > 0:
            name, value = self._keys(key).token, self._sealer.seal(token)
            await self._aonce_more(lambda: self._client.set(name, value, px=_ms(ttl)))

    async def cool_down(self, key: CacheKey, seconds: float) -> None:  # type: ignore[override]
        if seconds > 0:
            name = self._keys(key).cooldown
            await self._aonce_more(lambda: self._client.set(name, b"1", px=_ms(seconds)))

    async def release(self, key: CacheKey, owner: str) -> None:  # type: ignore[override]
        lock = self._keys(key).lock
        await self._aonce_more(lambda: self._release(keys=[lock], args=[owner]))

    async def aclose(self) -> None:
        if self._owned:
            await self._client.aclose()


def _reserved(answer: Any) -> Reserved:
    """The budget script's ``{wait, epoch}`` as ``(seconds, epoch)``."""
    wait, epoch = answer
    return float(wait), epoch.decode() if isinstance(epoch, bytes) else str(epoch)


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def _member() -> str:
    return os.urandom(8).hex()


_MALFORMED_URL = (
    "The Redis URL is malformed. Its form is redis://[user[:password]@]host[:port][/db], db "
    "a number (0 when left out; rediss:// for TLS, unix:///path.sock?db=0 for a socket); a "
    "'/', '@', ':', '#' or '?' in "
    "the user or password must be percent-encoded (urllib.parse.quote(password, safe=''): "
    "'/' is %2F). The URL is not shown, as it may hold a password."
)


_DB_PATH = re.compile(r"(/(\d+/?)?)?")
"""The path of a redis:// or rediss:// URL: none, ``/`` or ``/<database number>``."""


def _check_url(url: str) -> None:
    """Refuse a URL redis-py could not use, without repeating any part of it."""
    from redis.connection import parse_url

    try:
        options = parse_url(url)  # type: ignore[no-untyped-call]
        port = options.get("port", 6379)
        usable = isinstance(port, int) and 0 < port < 65536
        usable = usable and ("path" in options or bool(options.get("host")))
        if "path" not in options:  # redis-py ignores a path that is not a database number
            parts = urllib.parse.urlsplit(url)  # and takes the last '@' as the user's end
            usable = usable and _DB_PATH.fullmatch(parts.path) is not None
            usable = usable and "@" not in parts.netloc.rpartition("@")[0]
    except Exception:  # whatever redis-py says may quote the password
        usable = False
    if not usable:  # raised out here, so that no exception chain keeps redis-py's message
        raise ConfigurationError(_MALFORMED_URL)


def _is_async_client(client: Any) -> bool:
    return type(client).__module__.startswith("redis.asyncio")


class RedisStore(FleetStore):
    """Tokens, the lock, the rate budget and the cool-down shared through Redis.

    ``RedisStore(url)``: a ``redis://`` or ``rediss://`` URL; with none,
    ``EIGHTY_EIGHT_PAY_REDIS_URL`` or the local default. Or ``RedisStore(client)``: a
    redis-py client you built (``redis.Redis``, ``redis.cluster.RedisCluster``, a Sentinel's
    ``master_for(...)``, or their ``redis.asyncio`` forms), for Cluster, Sentinel, TLS
    and ACL setups; pass the asyncio form as ``async_client=`` beside a blocking one so
    that asyncio managers use it (without one they run the blocking client in a worker
    thread). A client you pass is yours: :meth:`close` leaves it open.

    ``encryption_key`` (or ``EIGHTY_EIGHT_PAY_STORE_KEY``) encrypts tokens at rest.
    ``timeout`` is the socket timeout of a client the store builds from a URL; whatever
    the client, every call is also bounded by ``deadline``, enforced by the managers.

    Raises :class:`~eightyeightpay.errors.ConfigurationError` for a malformed URL (the
    message never repeats the URL) or a client that is not a redis-py client.
    """

    name = "redis"

    def __init__(
        self,
        url: str | Any = None,
        *,
        async_client: Any = None,
        namespace: str = "eightyeightpay",
        encryption_key: str | bytes | None = None,
        timeout: float = 0.5,
    ) -> None:
        try:
            import redis  # noqa: F401
        except ImportError:
            raise ConfigurationError(
                "The redis store needs redis-py: pip install 'eightyeightpay[redis]'."
            ) from None
        super().__init__()
        client = None if url is None or isinstance(url, str) else url
        if client is not None and _is_async_client(client):
            client, async_client = None, client
        for given in (client, async_client):
            if given is not None and not callable(getattr(given, "register_script", None)):
                raise ConfigurationError(
                    "RedisStore takes a URL or a redis-py client (redis.Redis, "
                    "redis.cluster.RedisCluster, Sentinel.master_for(...) or their "
                    f"redis.asyncio forms), not {type(given).__name__}."
                )
        self._client = client
        self._async_client = async_client
        if client is None and async_client is None:
            self.url = url or os.environ.get(REDIS_URL_VARIABLE) or "redis://127.0.0.1:6379/0"
            """The Redis URL the store builds its clients from (may hold a password)."""
            _check_url(self.url)
        else:
            self.url = ""
        self.namespace = namespace
        """Prefix of every key."""
        self._sealer = Sealer(encryption_key or os.environ.get(ENCRYPTION_KEY_VARIABLE))
        self._timeout = timeout
        self.deadline = 2 * timeout + 0.5
        """Seconds the managers let one store call take (one retry included) before they
        count it as an outage."""
        self._sync: _Operations | None = None
        self._lock = threading.Lock()

    def misconfiguration(self, error: BaseException) -> str | None:
        """The fix when ``error`` is a configuration mistake, else None.

        Redis's own: a refused password or user, an ACL without a permission the store
        needs, a database number the server does not have; and those of every store
        (:func:`~eightyeightpay.plugins.fleet.misconfiguration`).
        """
        from redis.exceptions import AuthenticationError, NoPermissionError, ResponseError

        said = str(error)  # read, never logged: it may quote the URL
        if isinstance(error, NoPermissionError) or said.startswith("NOPERM"):
            return _REDIS_MISTAKES["acl"]
        if isinstance(error, AuthenticationError) or said.startswith(("NOAUTH", "WRONGPASS")):
            return _REDIS_MISTAKES["auth"]
        if isinstance(error, ResponseError) and "DB index" in said:
            return _REDIS_MISTAKES["db"]
        return super().misconfiguration(error)

    def _options(self) -> dict[str, Any]:
        return {"socket_timeout": self._timeout, "socket_connect_timeout": self._timeout}

    def operations(self) -> _Operations:
        """The blocking operations (one client, shared by the process's threads)."""
        with self._lock:
            if self._sync is None:
                if self._client is not None:
                    self._sync = _Operations(
                        self._client, self.namespace, self._sealer, owned=False
                    )
                elif self._async_client is not None:
                    raise ConfigurationError(
                        "This RedisStore was given only an asyncio client; threaded and trio "
                        "managers need a blocking one: RedisStore(blocking_client, "
                        "async_client=asyncio_client)."
                    )
                else:
                    import redis

                    client = redis.Redis.from_url(self.url, **self._options())
                    self._sync = _Operations(client, self.namespace, self._sealer, owned=True)
            return self._sync

    def async_operations(self) -> AsyncFleetOperations:
        """Operations for one asyncio manager, called once by each when it is built.

        From a URL: a new asyncio client, which that manager closes. With ``async_client``:
        that client (left open). With only a blocking client: its operations in a worker
        thread.
        """
        if self._async_client is not None:
            return _AsyncOperations(self._async_client, self.namespace, self._sealer, owned=False)
        if self._client is not None:
            return InThreads(self.operations())
        import redis.asyncio

        client = redis.asyncio.Redis.from_url(self.url, **self._options())
        return _AsyncOperations(client, self.namespace, self._sealer, owned=True)

    def keys(self, key: CacheKey) -> RedisKeys:
        """The Redis keys used for ``key``."""
        return RedisKeys.of(self.namespace, key)

    def close(self) -> None:
        """Close the blocking client the store built (a client you passed stays open)."""
        with self._lock:
            if self._sync is not None:
                self._sync.close()
                self._sync = None

    def __repr__(self) -> str:
        return f"RedisStore(namespace={self.namespace!r})"


_process_stores: dict[tuple[Any, ...], RedisStore] = {}
_process_stores_lock = threading.Lock()


def _redis_store(**options: Any) -> RedisStore:
    """The process's RedisStore for these options (``store="redis"``)."""
    key = tuple(sorted(options.items()))
    with _process_stores_lock:
        if key not in _process_stores:
            _process_stores[key] = RedisStore(**options)
        return _process_stores[key]


@hookimpl
def eightyeightpay_register_stores(register: Callable[[str, StoreFactory], None]) -> None:
    """Register the ``redis`` store."""
    register("redis", _redis_store)
