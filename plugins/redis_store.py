"""The ``redis`` store: one token, one lock and one rate budget for a whole fleet.

- The token is read together with its remaining TTL in one transaction: the store's clock
  measures its life, so hosts' clocks do not matter.
- The single-flight lock is ``SET NX PX`` with a fencing value; release compares and
  deletes in one script, so a slow holder never frees a lock someone else took since.
- The fleet's 10/minute and 100/hour windows are a sorted set of send times taken from
  Redis's own ``TIME`` inside a script.
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
import threading
from collections.abc import Callable
from typing import Any

import attrs

from eightyeightpay.credentials import CacheKey, Environment, environment_of
from eightyeightpay.errors import ConfigurationError
from eightyeightpay.fleet import StoredToken
from eightyeightpay.ports import ReadValue

from .fleet import ENCRYPTION_KEY_VARIABLE, FleetStore, Sealer
from .hookspecs import StoreFactory, hookimpl

__all__ = ["REDIS_URL_VARIABLE", "RedisKeys", "RedisStore"]

REDIS_URL_VARIABLE = "EIGHTY_EIGHT_PAY_REDIS_URL"
"""Where the store connects when no URL is given (default ``redis://127.0.0.1:6379/0``)."""

_BUDGET = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local wait = 0
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 3600)
for _, span in ipairs({{60, tonumber(ARGV[1])}, {3600, tonumber(ARGV[2])}}) do
  local sends = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. string.format('%.6f', now - span[1]),
                           '+inf', 'WITHSCORES')
  local count = #sends / 2
  if count >= span[2] then
    local leaving = tonumber(sends[(count - span[2]) * 2 + 2])
    wait = math.max(wait, leaving + span[1] - now)
  end
end
if wait > 0 then return string.format('%.6f', wait) end
redis.call('ZADD', KEYS[1], string.format('%.6f', now), ARGV[3])
redis.call('EXPIRE', KEYS[1], 3700)
return '0'
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


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
        return cls(f"{base}:token", f"{base}:lock", f"{base}:budget", f"{base}:cooldown")


def _seconds(milliseconds: Any) -> float:
    return max(0.0, float(milliseconds) / 1000.0) if isinstance(milliseconds, int) else 0.0


class _Operations:
    """The store's operations over redis-py's blocking client."""

    def __init__(self, client: Any, namespace: str, sealer: Sealer) -> None:
        self._client = client
        self._namespace = namespace
        self._sealer = sealer
        self._budget = client.register_script(_BUDGET)
        self._release = client.register_script(_RELEASE)

    def _keys(self, key: CacheKey) -> RedisKeys:
        return RedisKeys.of(self._namespace, key)

    def read(self, key: CacheKey) -> ReadValue:
        keys = self._keys(key)
        pipe = self._client.pipeline(transaction=True)
        pipe.get(keys.token).pttl(keys.token).pttl(keys.cooldown)
        raw, ttl, cooldown = pipe.execute()
        return self._sealer.open(raw), _seconds(ttl), _seconds(cooldown)

    def acquire(self, key: CacheKey, owner: str, ttl: float) -> bool:
        return bool(self._client.set(self._keys(key).lock, owner, nx=True, px=_ms(ttl)))

    def reserve(self, key: CacheKey, per_minute: int, per_hour: int) -> float:
        wait = self._budget(keys=[self._keys(key).budget], args=[per_minute, per_hour, _member()])
        return float(wait)

    def write(self, key: CacheKey, token: StoredToken, ttl: float) -> None:
        if ttl > 0:
            self._client.set(self._keys(key).token, self._sealer.seal(token), px=_ms(ttl))

    def cool_down(self, key: CacheKey, seconds: float) -> None:
        if seconds > 0:
            self._client.set(self._keys(key).cooldown, b"1", px=_ms(seconds))

    def release(self, key: CacheKey, owner: str) -> None:
        self._release(keys=[self._keys(key).lock], args=[owner])

    def close(self) -> None:
        self._client.close()


class _AsyncOperations(_Operations):
    """The same operations over redis-py's asyncio client (one per manager)."""

    async def read(self, key: CacheKey) -> ReadValue:  # type: ignore[override]
        keys = self._keys(key)
        pipe = self._client.pipeline(transaction=True)
        pipe.get(keys.token).pttl(keys.token).pttl(keys.cooldown)
        raw, ttl, cooldown = await pipe.execute()
        return self._sealer.open(raw), _seconds(ttl), _seconds(cooldown)

    async def acquire(self, key: CacheKey, owner: str, ttl: float) -> bool:  # type: ignore[override]
        return bool(await self._client.set(self._keys(key).lock, owner, nx=True, px=_ms(ttl)))

    async def reserve(self, key: CacheKey, per_minute: int, per_hour: int) -> float:  # type: ignore[override]
        keys = [self._keys(key).budget]
        return float(await self._budget(keys=keys, args=[per_minute, per_hour, _member()]))

    async def write(self, key: CacheKey, token: StoredToken, ttl: float) -> None:  # type: ignore[override]
        if ttl > 0:
            await self._client.set(self._keys(key).token, self._sealer.seal(token), px=_ms(ttl))

    async def cool_down(self, key: CacheKey, seconds: float) -> None:  # type: ignore[override]
        if seconds > 0:
            await self._client.set(self._keys(key).cooldown, b"1", px=_ms(seconds))

    async def release(self, key: CacheKey, owner: str) -> None:  # type: ignore[override]
        await self._release(keys=[self._keys(key).lock], args=[owner])

    async def aclose(self) -> None:
        await self._client.aclose()


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def _member() -> str:
    return os.urandom(8).hex()


class RedisStore(FleetStore):
    """Tokens, the lock, the rate budget and the cool-down shared through Redis.

    ``RedisStore(url)``; with no URL, ``EIGHTY_EIGHT_PAY_REDIS_URL`` or the local default.
    ``encryption_key`` (or ``EIGHTY_EIGHT_PAY_STORE_KEY``) encrypts tokens at rest.
    ``timeout`` bounds every Redis call, so a slow Redis degrades to local work quickly.
    """

    name = "redis"

    def __init__(
        self,
        url: str | None = None,
        *,
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
        self.url = url or os.environ.get(REDIS_URL_VARIABLE) or "redis://127.0.0.1:6379/0"
        """The Redis URL (may hold a password: never logged)."""
        self.namespace = namespace
        """Prefix of every key."""
        self._sealer = Sealer(encryption_key or os.environ.get(ENCRYPTION_KEY_VARIABLE))
        self._timeout = timeout
        self._sync: _Operations | None = None

    def _options(self) -> dict[str, Any]:
        return {"socket_timeout": self._timeout, "socket_connect_timeout": self._timeout}

    def operations(self) -> _Operations:
        """The blocking operations (one client, shared by the process's threads)."""
        if self._sync is None:
            import redis

            client = redis.Redis.from_url(self.url, **self._options())
            self._sync = _Operations(client, self.namespace, self._sealer)
        return self._sync

    def async_operations(self) -> _AsyncOperations:
        """A new asyncio client's operations; the manager that asked closes it."""
        import redis.asyncio

        client = redis.asyncio.Redis.from_url(self.url, **self._options())
        return _AsyncOperations(client, self.namespace, self._sealer)

    def keys(self, key: CacheKey) -> RedisKeys:
        """The Redis keys used for ``key``."""
        return RedisKeys.of(self.namespace, key)

    def close(self) -> None:
        """Close the blocking client."""
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
