"""A third party's fleet store, outside the repository: the one docs/store-plugin.md builds.

Its "server" is a dict with a lock and its own clock; the test copies this file into a
temporary directory and runs the shipped contract suite against it in a child process.
"""

from __future__ import annotations

import threading
import time
import uuid

from eightyeightpay import (
    BudgetRequest,
    CacheKey,
    FleetStore,
    Sealer,
    StoreBudget,
    StoredToken,
)


class DictBackend:
    """The shared "server": one dict, its lock, and its own clock for every expiry."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.data: dict[str, tuple[object, float]] = {}
        self.up = True

    def now(self) -> float:
        return time.monotonic()

    def get(self, name: str) -> tuple[object, float] | None:
        if not self.up:
            raise ConnectionError("dict backend unreachable")
        found = self.data.get(name)
        if found is None or found[1] <= self.now():
            self.data.pop(name, None)
            return None
        return found


class DictOperations:
    def __init__(self, backend: DictBackend, sealer: Sealer) -> None:
        self.backend = backend
        self.sealer = sealer

    @staticmethod
    def name(key: CacheKey, part: str) -> str:
        return f"dict:{key.base_url}:{key.merchant_id}:{key.key_fingerprint}:{part}"

    def read(self, key: CacheKey) -> tuple[bytes | None, float, float]:
        with self.backend.lock:
            token = self.backend.get(self.name(key, "token"))
            cooldown = self.backend.get(self.name(key, "cooldown"))
            now = self.backend.now()
            raw = token[0] if token else None
            assert raw is None or isinstance(raw, bytes)
            left = token[1] - now if token else 0.0
            return self.sealer.open(raw), left, (cooldown[1] - now if cooldown else 0.0)

    def acquire(self, key: CacheKey, owner: str, ttl: float) -> bool:
        with self.backend.lock:
            if self.backend.get(self.name(key, "lock")) is not None:
                return False
            self.backend.data[self.name(key, "lock")] = (owner, self.backend.now() + ttl)
            return True

    def extend(self, key: CacheKey, owner: str, ttl: float) -> bool:
        with self.backend.lock:
            found = self.backend.get(self.name(key, "lock"))
            if found is None or found[0] != owner:
                return False
            self.backend.data[self.name(key, "lock")] = (owner, self.backend.now() + ttl)
            return True

    def reserve(self, key: CacheKey, request: BudgetRequest) -> tuple[float, str]:
        with self.backend.lock:  # read, decide, write: one step
            name = self.name(key, request.purpose + "-budget")
            found = self.backend.get(name)
            budget = found[0] if found else StoreBudget()  # gone: no epoch, a new one is made
            assert isinstance(budget, StoreBudget)
            now = self.backend.now()
            budget, wait = budget.reserve(request, now, uuid.uuid4().hex)
            self.backend.data[name] = (budget, now + request.hour_span)
            return wait, budget.epoch

    def spent(
        self, key: CacheKey, purpose: str, minute_span: float, hour_span: float
    ) -> tuple[int, int]:
        with self.backend.lock:
            found = self.backend.get(self.name(key, purpose + "-budget"))
            budget = found[0] if found else StoreBudget()
            assert isinstance(budget, StoreBudget)
            return budget.spent(self.backend.now(), minute_span, hour_span)

    def join(self, key: CacheKey, member: str, ttl: float) -> int:
        with self.backend.lock:
            now = self.backend.now()
            found = self.backend.get(self.name(key, "members"))
            members = found[0] if found else {}
            assert isinstance(members, dict)
            live = {m: until for m, until in members.items() if until > now}
            live[member] = now + ttl
            self.backend.data[self.name(key, "members")] = (live, max(live.values()))
            return len(live)

    def write(self, key: CacheKey, token: StoredToken, ttl: float) -> None:
        with self.backend.lock:
            if not self.backend.up:
                raise ConnectionError("dict backend unreachable")
            sealed = self.sealer.seal(token)
            self.backend.data[self.name(key, "token")] = (sealed, self.backend.now() + ttl)

    def cool_down(self, key: CacheKey, seconds: float) -> None:
        with self.backend.lock:
            if not self.backend.up:
                raise ConnectionError("dict backend unreachable")
            self.backend.data[self.name(key, "cooldown")] = (True, self.backend.now() + seconds)

    def release(self, key: CacheKey, owner: str) -> None:
        with self.backend.lock:
            found = self.backend.get(self.name(key, "lock"))
            if found is not None and found[0] == owner:
                del self.backend.data[self.name(key, "lock")]


class AsyncDictOperations:
    def __init__(self, operations: DictOperations) -> None:
        self.sync = operations

    async def read(self, key: CacheKey) -> tuple[bytes | None, float, float]:
        return self.sync.read(key)

    async def acquire(self, key: CacheKey, owner: str, ttl: float) -> bool:
        return self.sync.acquire(key, owner, ttl)

    async def extend(self, key: CacheKey, owner: str, ttl: float) -> bool:
        return self.sync.extend(key, owner, ttl)

    async def reserve(self, key: CacheKey, request: BudgetRequest) -> tuple[float, str]:
        return self.sync.reserve(key, request)

    async def join(self, key: CacheKey, member: str, ttl: float) -> int:
        return self.sync.join(key, member, ttl)

    async def spent(
        self, key: CacheKey, purpose: str, minute_span: float, hour_span: float
    ) -> tuple[int, int]:
        return self.sync.spent(key, purpose, minute_span, hour_span)

    async def write(self, key: CacheKey, token: StoredToken, ttl: float) -> None:
        self.sync.write(key, token, ttl)

    async def cool_down(self, key: CacheKey, seconds: float) -> None:
        self.sync.cool_down(key, seconds)

    async def release(self, key: CacheKey, owner: str) -> None:
        self.sync.release(key, owner)


class DictStore(FleetStore):
    name = "dict"

    def __init__(self, backend: DictBackend, *, encryption_key: bytes | None = None) -> None:
        super().__init__()
        self._operations = DictOperations(backend, Sealer(encryption_key))

    def operations(self) -> DictOperations:
        return self._operations

    def async_operations(self) -> AsyncDictOperations:
        return AsyncDictOperations(self._operations)
