"""The memcached store against a test-owned memcached: the fleet contract and its limits."""

from __future__ import annotations

import re
import sys
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.fernet import Fernet
from pymemcache.client.base import Client  # type: ignore[import-untyped]
from pymemcache.exceptions import MemcacheUnknownCommandError  # type: ignore[import-untyped]

from eightyeightpay import ConfigurationError, Token
from eightyeightpay.credentials import CacheKey
from eightyeightpay.fleet import StoredToken, decode_stored
from eightyeightpay.plugins.memcached_store import (
    MemcachedContention,
    MemcachedKeys,
    MemcachedStore,
    _expiry,
)
from eightyeightpay.plugins.registry import registry
from eightyeightpay.plugins.sandbox import (
    DEFAULT_API_KEY,
    DEFAULT_MERCHANT_ID,
    SandboxServer,
)
from tests.plugins.fleet_support import Fleet as SharedFleet
from tests.plugins.fleet_support import reserve_wait, secrets_of
from tests.servers import MemcachedServer


class Fleet(SharedFleet):
    """The shared test fleet, with a raw client of the test's memcached."""

    def __init__(self, server: SandboxServer, memcached: MemcachedServer) -> None:
        self.address = memcached.address
        super().__init__(server, lambda **options: MemcachedStore(self.address, **options))

    def key(self) -> CacheKey:
        return self.process().credentials.cache_key

    def client(self) -> Any:
        return Client(self.address, connect_timeout=2, timeout=2, default_noreply=False)


@pytest.fixture
def fleet(https_server: SandboxServer, memcached_server: MemcachedServer) -> Iterator[Fleet]:
    world = Fleet(https_server, memcached_server)
    yield world
    world.close()


class FakeWall:
    """A Unix-time clock the test moves by hand."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def all_keys(client: Any) -> list[str]:
    """Every key memcached holds (lru_crawler metadump), not only the ones we know of."""
    dump = client.raw_command(b"lru_crawler metadump all", b"END\r\n").decode()
    return [
        urllib.parse.unquote(part[len("key=") :])
        for line in dump.splitlines()
        for part in line.split()
        if part.startswith("key=")
    ]


def everything_in(fleet: Fleet) -> str:
    client = fleet.client()
    try:
        keys = all_keys(client)
        assert keys, "nothing was stored"
        parts = list(keys)
        for key in keys:
            parts.append((client.get(key) or b"").decode(errors="replace"))
        return "\n".join(parts)
    finally:
        client.close()


def test_store_memcached_is_registered_and_process_wide(
    fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    host, port = fleet.address
    factory = registry().store("memcached")
    assert factory(server=f"{host}:{port}") is factory(server=f"{host}:{port}")
    monkeypatch.setenv("EIGHTY_EIGHT_PAY_MEMCACHED", f"{host}:{port}")
    store = MemcachedStore()
    fleet.stores.append(store)
    assert store.server == (host, port)
    with pytest.raises(ConfigurationError, match="host:port"):
        MemcachedStore("no-port")
    for server in ("user:s3cr3t-pw@127.0.0.1:11299", "memcache://127.0.0.1:11299"):
        with pytest.raises(ConfigurationError, match="takes no user name") as caught:
            MemcachedStore(server)
        assert "s3cr3t-pw" not in str(caught.value)
    with pytest.raises(ConfigurationError, match="namespace"):
        MemcachedStore(fleet.address, namespace="has space")


def test_keys_follow_the_redis_scheme_fit_memcached_and_never_hold_the_api_key(
    fleet: Fleet,
) -> None:
    manager = fleet.process()
    manager.get_token()
    client = fleet.client()
    try:
        stored = all_keys(client)
    finally:
        client.close()
    keys = MemcachedKeys.of("eightyeightpay", manager.credentials.cache_key)
    assert {keys.token, keys.budget} <= set(stored)  # the lock was released
    assert keys.lock not in stored
    tags = {re.search(r"\{[^}]+\}", key).group(0) for key in stored}  # type: ignore[union-attr]
    assert len(tags) == 1 and DEFAULT_MERCHANT_ID in next(iter(tags))
    first: Any = fleet.stores[0]
    assert keys.token == first.keys(manager.credentials.cache_key).token
    for key in stored:
        assert key.startswith("eightyeightpay:{")
        assert DEFAULT_API_KEY not in key
        assert len(key.encode()) <= 250 and " " not in key
    with pytest.raises(ValueError, match="250"):
        MemcachedKeys.of("n" * 240, manager.credentials.cache_key)


def test_garbage_or_a_foreign_value_at_the_token_key_is_ignored_and_replaced(
    fleet: Fleet,
) -> None:
    manager = fleet.process()
    keys = MemcachedKeys.of("eightyeightpay", manager.credentials.cache_key)
    client = fleet.client()
    junk_values = (
        b"\x00\xffgarbage",
        b"60.000:1.0:" + b'{"access_token": 5}',
        b"nan:inf:[1,2,3]",
        b'{"other":"app"}',
        b"1e309:5:x",
    )
    try:
        for junk in junk_values:
            client.set(keys.token, junk, expire=50)
            client.set(keys.budget, b"\x00not times", expire=50)
            client.set(keys.cooldown, b"garbage", expire=50)
            manager._slot.machine.token = None
            manager._slot.refresh_snapshot()
            assert isinstance(manager.get_token(), Token)
            assert client.get(keys.token) != junk  # replaced by a real token
            assert decode_stored(client.get(keys.token).split(b":", 2)[2]) is not None
    finally:
        client.close()
    assert fleet.token_requests() == len(junk_values)


def test_with_encryption_neither_jwt_nor_api_key_nor_session_is_in_memcached(
    fleet: Fleet,
) -> None:
    key = Fernet.generate_key()
    a = fleet.process(store=fleet.store(encryption_key=key))
    b = fleet.process(store=fleet.store(encryption_key=key))
    token = a.get_token()
    assert b.get_token() == token and fleet.token_requests() == 1
    stored = everything_in(fleet)
    for secret in secrets_of(token):
        assert secret not in stored


def test_without_encryption_the_stored_token_is_shared_as_is(fleet: Fleet) -> None:
    token = fleet.process().get_token()
    assert token.access_token in everything_in(fleet)  # the control for the test above


def test_a_store_with_another_key_ignores_the_encrypted_token_and_replaces_it(
    fleet: Fleet,
) -> None:
    first = fleet.process(store=fleet.store(encryption_key=Fernet.generate_key()))
    second = fleet.process(store=fleet.store(encryption_key=Fernet.generate_key()))
    assert first.get_token() != second.get_token()
    assert fleet.token_requests() == 2


def test_remaining_life_is_written_time_minus_wall_time_elapsed(fleet: Fleet) -> None:
    wall = FakeWall()
    ops = fleet.store(wall_clock=wall).operations()
    key = fleet.key()
    token = StoredToken("jwt", "session", DEFAULT_MERCHANT_ID, 60.0)
    ops.write(key, token, 58.0)
    ops.cool_down(key, 30.0)
    wall.now += 12
    raw, ttl, cooldown = ops.read(key)
    assert decode_stored(raw) == token
    assert ttl == pytest.approx(46.0) and cooldown == pytest.approx(18.0)
    wall.now += 47
    assert ops.read(key) == (None, 0.0, 0.0)


def test_documented_limit_a_host_clock_off_shifts_the_tokens_remaining_life(
    fleet: Fleet,
) -> None:
    """Unlike Redis, the remaining life read depends on the reader's wall clock."""
    writer_wall = FakeWall()
    key = fleet.key()
    fleet.store(wall_clock=writer_wall).operations().write(
        key, StoredToken("jwt", "session", DEFAULT_MERCHANT_ID, 60.0), 60.0
    )
    truth = 60.0 - 40
    ahead = fleet.store(wall_clock=lambda: writer_wall.now + 40 + 30).operations()
    behind = fleet.store(wall_clock=lambda: writer_wall.now + 40 - 30).operations()
    far_behind = fleet.store(wall_clock=lambda: writer_wall.now - 1000).operations()
    assert ahead.read(key)[1:] == (0.0, 0.0)  # 30 s ahead: the token looks expired
    assert behind.read(key)[1] == pytest.approx(truth + 30)  # 30 s behind: 30 s too young
    assert far_behind.read(key)[1] == pytest.approx(60.0)  # never more than written


def test_documented_limit_a_host_clock_30_s_off_changes_its_decisions(fleet: Fleet) -> None:
    normal = fleet.process()
    skewed = fleet.process(store=fleet.store(wall_clock=lambda: time.time() + 30.0))
    a, b = normal.get_token(), skewed.get_token()
    assert a == b and fleet.token_requests() == 1  # still shared ...
    left_a = a.usable_until - time.monotonic()
    left_b = b.usable_until - time.monotonic()
    assert 29 < left_a - left_b < 31  # ... but 30 s of its life is lost on the skewed host
    far = fleet.process(store=fleet.store(wall_clock=lambda: time.time() + 55.0))
    assert far.get_token() != a  # 55 s ahead: it sees a stale token and refreshes early
    assert fleet.token_requests() == 2


def test_lock_exclusion_and_fenced_release(fleet: Fleet) -> None:
    ops = fleet.store().operations()
    key = fleet.key()
    assert ops.acquire(key, "holder", 10)
    assert not ops.acquire(key, "intruder", 10)
    ops.release(key, "intruder")  # not the holder: nothing happens
    assert not ops.acquire(key, "intruder", 10)
    ops.release(key, "holder")
    assert ops.acquire(key, "intruder", 10)


class TakenOverAfterGets:
    """A client on which the lock expires and another flight takes it right after ``gets``."""

    def __init__(self, inner: Any, lock: str, *, meta: bool) -> None:
        self.inner = inner
        self.lock = lock
        self.meta = meta
        self.deleted_by_fallback = False

    def gets(self, key: str) -> Any:
        found = self.inner.gets(key)
        self.inner.delete(key, noreply=False)  # the holder's lock expires ...
        assert self.inner.add(key, b"next-flight", expire=10, noreply=False)  # ... and is taken
        return found

    def raw_command(self, command: bytes, end_tokens: bytes = b"\r\n") -> Any:
        if not self.meta:
            raise MemcacheUnknownCommandError(command[:2])  # memcached < 1.6
        return self.inner.raw_command(command, end_tokens)

    def delete(self, key: str, noreply: bool | None = None) -> Any:
        self.deleted_by_fallback = True
        return self.inner.delete(key, noreply=noreply)

    def close(self) -> None:
        self.inner.close()


def test_release_never_frees_a_lock_taken_since_its_gets(fleet: Fleet) -> None:
    ops = fleet.store().operations()
    key = fleet.key()
    lock = MemcachedKeys.of("eightyeightpay", key).lock
    assert ops.acquire(key, "slow-holder", 10)
    ops._client = TakenOverAfterGets(ops._client, lock, meta=True)
    ops.release(key, "slow-holder")
    client = fleet.client()
    try:
        assert client.get(lock) == b"next-flight"  # md ... C<cas> refused the newer item
    finally:
        client.close()


def test_documented_limit_without_meta_commands_release_has_a_race_window(
    fleet: Fleet,
) -> None:
    ops = fleet.store().operations()
    key = fleet.key()
    lock = MemcachedKeys.of("eightyeightpay", key).lock
    assert ops.acquire(key, "slow-holder", 10)
    racing = TakenOverAfterGets(ops._client, lock, meta=False)
    ops._client = racing
    ops.release(key, "slow-holder")
    assert racing.deleted_by_fallback
    client = fleet.client()
    try:
        assert client.get(lock) is None  # the other flight's lock was freed: the race stated
    finally:
        client.close()


def test_lock_expiry_is_rounded_up_and_never_shorter_than_asked(fleet: Fleet) -> None:
    assert (_expiry(0.2), _expiry(3.0), _expiry(3.2)) == (2, 4, 5)
    ops = fleet.store().operations()
    key = fleet.key()
    assert ops.acquire(key, "holder", 0.2)
    client = fleet.client()
    try:
        lock = MemcachedKeys.of("eightyeightpay", key).lock
        header = client.raw_command(b"mg " + lock.encode() + b" t").decode()
    finally:
        client.close()
    assert header.startswith("HD t")
    assert int(header.split("t")[-1]) in (1, 2)  # ceil(0.2) + 1 = 2 s, read on a 1 s clock


def test_fleet_budget_10_a_minute_and_100_an_hour(fleet: Fleet) -> None:
    wall = FakeWall()
    ops = fleet.store(wall_clock=wall).operations()
    key = fleet.key()
    first = wall.now
    for _ in range(10):
        assert reserve_wait(ops, key, 10, 100) == 0.0
        wall.now += 1
    assert reserve_wait(ops, key, 10, 100) == pytest.approx(first + 60 - wall.now)
    wall.now = first + 60.5  # the first send left the minute
    assert reserve_wait(ops, key, 10, 100) == 0.0
    other = fleet.store(wall_clock=wall).operations()  # another process sees the same budget
    assert reserve_wait(other, key, 10, 100) > 0
    hourly = fleet.store(wall_clock=wall).operations()
    assert reserve_wait(hourly, key, 1000, 11) == pytest.approx(first + 3600 - wall.now)
    wall.now = first + 3600.5  # an hour on: old sends are pruned
    assert reserve_wait(hourly, key, 1000, 11) == 0.0


def test_budget_garbage_is_replaced_and_a_cas_conflict_is_retried(fleet: Fleet) -> None:
    wall = FakeWall()
    ops = fleet.store(wall_clock=wall).operations()
    key = fleet.key()
    budget = MemcachedKeys.of("eightyeightpay", key).budget
    client = fleet.client()
    try:
        client.set(budget, b"\xff\x00 nan inf garbage", expire=100)
        assert reserve_wait(ops, key, 10, 100) == 0.0
        assert client.get(budget).split()[1:] == [b"%.6f" % wall.now]

        class Interfering:
            """Another process records a send between this one's gets and cas, once."""

            def __init__(self, inner: Any) -> None:
                self.inner = inner
                self.conflicts = 0

            def gets(self, key: str) -> Any:
                found = self.inner.gets(key)
                if self.conflicts == 0:
                    self.conflicts += 1
                    client.set(key, found[0] + b" %.6f" % (wall.now - 1), expire=100)
                return found

            def __getattr__(self, name: str) -> Any:
                return getattr(self.inner, name)

        ops._client = Interfering(ops._client)
        assert reserve_wait(ops, key, 10, 100) == 0.0
        assert len(client.get(budget).split()) == 4  # the epoch, ours, theirs, the retried one
    finally:
        client.close()


def test_endless_budget_conflicts_raise_so_the_flight_works_alone(fleet: Fleet) -> None:
    ops = fleet.store().operations()
    key = fleet.key()

    class AlwaysChanged:
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def gets(self, key: str) -> Any:
            return (None, None)

        def add(self, *args: Any, **kwargs: Any) -> bool:
            return False

        def close(self) -> None:
            self.inner.close()

    ops._client = AlwaysChanged(ops._client)
    with pytest.raises(MemcachedContention):
        reserve_wait(ops, key, 10, 100)


def test_repr_holds_no_secret(fleet: Fleet) -> None:
    key = Fernet.generate_key()
    store = fleet.store(encryption_key=key)
    assert key.decode() not in repr(store) and "MemcachedStore(server=" in repr(store)


def test_without_pymemcache_the_store_is_a_clear_configuration_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "pymemcache", None)  # import pymemcache now fails
    with pytest.raises(ConfigurationError, match=r"pip install 'eightyeightpay\[memcached\]'"):
        MemcachedStore(("127.0.0.1", 1))
