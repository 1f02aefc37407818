"""The redis store against a test-owned redis-server: sharing, fencing, budget, safety."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from cryptography.fernet import Fernet

from eightyeightpay import Token
from eightyeightpay.plugins.redis_store import RedisKeys, RedisStore
from eightyeightpay.plugins.sandbox import (
    DEFAULT_API_KEY,
    DEFAULT_MERCHANT_ID,
    SandboxServer,
)
from tests.plugins.fleet_support import Fleet, reserve_wait, secrets_of
from tests.servers import RedisServer


class RedisFleet(Fleet):
    """The shared test fleet on a test-owned redis-server."""

    def __init__(self, server: SandboxServer, redis_url: str) -> None:
        self.redis_url = redis_url
        super().__init__(server, lambda **options: RedisStore(redis_url, **options))


@pytest.fixture
def fleet(https_server: SandboxServer, redis_server: RedisServer) -> Iterator[RedisFleet]:
    world = RedisFleet(https_server, redis_server.url)
    yield world
    world.close()


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def everything_in(url: str) -> str:
    client = redis.Redis.from_url(url)
    try:
        parts = []
        for key in client.scan_iter("*"):
            parts.append(_text(key))
            kind = _text(client.type(key))
            if kind == "string":
                parts.append(_text(client.get(key) or b""))
            elif kind == "zset":
                parts += [_text(member) for member in client.zrange(key, 0, -1)]
        return "\n".join(parts)
    finally:
        client.close()


def test_keys_share_a_cluster_hash_tag_and_never_hold_the_api_key(fleet: RedisFleet) -> None:
    fleet.process().get_token()
    client = redis.Redis.from_url(fleet.redis_url)
    keys = [_text(k) for k in client.scan_iter("*")]
    client.close()
    assert keys, "nothing was stored"
    tags = {re.search(r"\{[^}]+\}", key).group(0) for key in keys}  # type: ignore[union-attr]
    assert len(tags) == 1 and DEFAULT_MERCHANT_ID in next(iter(tags))
    assert all(DEFAULT_API_KEY not in key for key in keys)


def test_garbage_or_a_foreign_value_at_the_token_key_is_ignored_and_replaced(
    fleet: RedisFleet,
) -> None:
    manager = fleet.process()
    keys = RedisKeys.of("eightyeightpay", manager.credentials.cache_key)
    client = redis.Redis.from_url(fleet.redis_url)
    try:
        for junk in (b"\x00\xffgarbage", b'{"access_token": 5}', b"[1,2,3]", b'{"other":"app"}'):
            client.set(keys.token, junk, px=50_000)
            manager._slot.machine.token = None
            manager._slot.refresh_snapshot()
            assert isinstance(manager.get_token(), Token)
            assert client.get(keys.token) != junk  # replaced by a real token
    finally:
        client.close()
    assert fleet.token_requests() == 4


def test_with_encryption_neither_jwt_nor_api_key_nor_session_is_in_redis(fleet: RedisFleet) -> None:
    key = Fernet.generate_key()
    a = fleet.process(store=fleet.store(encryption_key=key))
    b = fleet.process(store=fleet.store(encryption_key=key))
    token = a.get_token()
    assert b.get_token() == token and fleet.token_requests() == 1
    stored = everything_in(fleet.redis_url)
    assert stored
    for secret in secrets_of(token):
        assert secret not in stored


def test_without_encryption_the_stored_token_is_shared_as_is(fleet: RedisFleet) -> None:
    token = fleet.process().get_token()
    assert token.access_token in everything_in(fleet.redis_url)  # the control for the test above


def test_a_host_whose_clock_is_30_s_off_makes_the_same_expiry_decisions(fleet: RedisFleet) -> None:
    normal = fleet.process()
    skewed = fleet.process(clock=lambda: time.monotonic() + 30.0)
    a, b = normal.get_token(), skewed.get_token()
    assert a == b and fleet.token_requests() == 1
    left_a = a.usable_until - time.monotonic()
    left_b = b.usable_until - (time.monotonic() + 30.0)
    assert abs(left_a - left_b) < 0.5
    assert abs((a.fresh_until - a.usable_until) - (b.fresh_until - b.usable_until)) < 1e-6


def test_fenced_release_and_lock_exclusion(fleet: RedisFleet) -> None:
    store = fleet.store()
    ops = store.operations()
    key = fleet.process(store=store).credentials.cache_key
    assert ops.acquire(key, "holder", 10)
    assert not ops.acquire(key, "intruder", 10)
    ops.release(key, "intruder")  # not the holder: nothing happens
    assert not ops.acquire(key, "intruder", 10)
    ops.release(key, "holder")
    assert ops.acquire(key, "intruder", 10)


def test_fleet_budget_is_kept_with_redis_clock(fleet: RedisFleet) -> None:
    store = fleet.store()
    ops = store.operations()
    key = fleet.process(store=store).credentials.cache_key
    assert [reserve_wait(ops, key, 10, 100) for _ in range(10)] == [0.0] * 10
    wait = reserve_wait(ops, key, 10, 100)
    assert 58 < wait <= 60
