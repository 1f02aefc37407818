"""The redis store against a test-owned redis-server: sharing, fencing, budget, safety."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import trio
from cryptography.fernet import Fernet

from eightyeightpay import RateLimited, Token
from eightyeightpay.adapters.async_manager import AsyncTokenManager, open_trio_token_manager
from eightyeightpay.adapters.sync import TokenManager
from eightyeightpay.plugins.redis_store import RedisKeys, RedisStore
from eightyeightpay.plugins.sandbox import (
    DEFAULT_API_KEY,
    DEFAULT_MERCHANT_ID,
    Fault,
    SandboxServer,
)
from tests.servers import RedisServer


class Fleet:
    """Managers that behave like separate processes: each has its own RedisStore."""

    def __init__(self, server: SandboxServer, redis_url: str) -> None:
        assert server.certificates is not None
        self.server = server
        self.redis_url = redis_url
        self.options: dict[str, Any] = {
            "base_url": server.url,
            "ca_bundle": str(server.certificates.ca_file),
        }
        self.stores: list[RedisStore] = []
        self.managers: list[TokenManager] = []

    def store(self, **options: Any) -> RedisStore:
        store = RedisStore(self.redis_url, **options)
        self.stores.append(store)
        return store

    def process(self, **options: Any) -> TokenManager:
        store = options.pop("store", None) or self.store()
        manager = TokenManager(
            DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, store=store, **self.options, **options
        )
        self.managers.append(manager)
        return manager

    def token_requests(self) -> int:
        return self.server.sandbox.stats()["token_requests"]

    def close(self) -> None:
        for manager in self.managers:
            manager.close()
        for store in self.stores:
            store.close()


@pytest.fixture
def fleet(https_server: SandboxServer, redis_server: RedisServer) -> Iterator[Fleet]:
    world = Fleet(https_server, redis_server.url)
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


def test_processes_share_one_token_through_redis(fleet: Fleet) -> None:
    a, b, c = fleet.process(), fleet.process(), fleet.process()
    tokens = {a.get_token(), b.get_token(), c.get_token()}
    assert len(tokens) == 1
    assert fleet.token_requests() == 1


def test_keys_share_a_cluster_hash_tag_and_never_hold_the_api_key(fleet: Fleet) -> None:
    fleet.process().get_token()
    client = redis.Redis.from_url(fleet.redis_url)
    keys = [_text(k) for k in client.scan_iter("*")]
    client.close()
    assert keys, "nothing was stored"
    tags = {re.search(r"\{[^}]+\}", key).group(0) for key in keys}  # type: ignore[union-attr]
    assert len(tags) == 1 and DEFAULT_MERCHANT_ID in next(iter(tags))
    assert all(DEFAULT_API_KEY not in key for key in keys)


def test_garbage_or_a_foreign_value_at_the_token_key_is_ignored_and_replaced(fleet: Fleet) -> None:
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


def test_with_encryption_neither_jwt_nor_api_key_nor_session_is_in_redis(fleet: Fleet) -> None:
    key = Fernet.generate_key()
    a = fleet.process(store=fleet.store(encryption_key=key))
    b = fleet.process(store=fleet.store(encryption_key=key))
    token = a.get_token()
    assert b.get_token() == token and fleet.token_requests() == 1
    stored = everything_in(fleet.redis_url)
    assert stored
    for secret in (token.access_token, token.session_id, DEFAULT_API_KEY, "eyJ"):
        assert secret not in stored


def test_without_encryption_the_stored_token_is_shared_as_is(fleet: Fleet) -> None:
    token = fleet.process().get_token()
    assert token.access_token in everything_in(fleet.redis_url)  # the control for the test above


def test_a_host_whose_clock_is_30_s_off_makes_the_same_expiry_decisions(fleet: Fleet) -> None:
    normal = fleet.process()
    skewed = fleet.process(clock=lambda: time.monotonic() + 30.0)
    a, b = normal.get_token(), skewed.get_token()
    assert a == b and fleet.token_requests() == 1
    left_a = a.usable_until - time.monotonic()
    left_b = b.usable_until - (time.monotonic() + 30.0)
    assert abs(left_a - left_b) < 0.5
    assert abs((a.fresh_until - a.usable_until) - (b.fresh_until - b.usable_until)) < 1e-6


def test_fenced_release_and_lock_exclusion(fleet: Fleet) -> None:
    store = fleet.store()
    ops = store.operations()
    key = fleet.process(store=store).credentials.cache_key
    assert ops.acquire(key, "holder", 10)
    assert not ops.acquire(key, "intruder", 10)
    ops.release(key, "intruder")  # not the holder: nothing happens
    assert not ops.acquire(key, "intruder", 10)
    ops.release(key, "holder")
    assert ops.acquire(key, "intruder", 10)


def test_fleet_budget_is_kept_with_redis_clock(fleet: Fleet) -> None:
    store = fleet.store()
    ops = store.operations()
    key = fleet.process(store=store).credentials.cache_key
    assert [ops.reserve(key, 10, 100) for _ in range(10)] == [0.0] * 10
    wait = ops.reserve(key, 10, 100)
    assert 58 < wait <= 60


def test_a_429_cools_down_the_whole_fleet(fleet: Fleet) -> None:
    fleet.server.sandbox.inject(
        Fault.status(
            429,
            body=b'{"status":"Error","code":429,"message":"Rate limit exceeded.","retry_after":30}',
        )
    )
    with pytest.raises(RateLimited) as first:
        fleet.process().get_token()
    assert not first.value.local
    with pytest.raises(RateLimited) as other:
        fleet.process().get_token()
    assert other.value.local and 25 < other.value.retry_after <= 30
    assert fleet.token_requests() == 1


def test_redis_down_degrades_without_errors_logs_once_and_rejoins(
    fleet: Fleet, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="eightyeightpay")
    redis_server.stop()
    a, b = fleet.process(), fleet.process()
    for manager in (a, b):
        for _ in range(100):
            assert isinstance(manager.get_token(), Token)
    assert fleet.token_requests() == 2  # each process alone: one request each
    outage_lines = [r for r in caplog.records if "unavailable" in r.getMessage()]
    assert len(outage_lines) == 2  # once per store (process), not per call
    redis_server.start()
    c, d = fleet.process(), fleet.process()
    assert c.get_token() == d.get_token()
    assert fleet.token_requests() == 3


def test_async_and_trio_managers_share_the_fleet_token(fleet: Fleet) -> None:
    sync_token = fleet.process().get_token()

    async def on_asyncio() -> Token:
        async with AsyncTokenManager(
            DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, store=fleet.store(), **fleet.options
        ) as manager:
            tokens = await asyncio.gather(*(manager.get_token() for _ in range(500)))
            assert len(set(tokens)) == 1
            return tokens[0]

    async def on_trio() -> Token:
        async with open_trio_token_manager(
            DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, store=fleet.store(), **fleet.options
        ) as manager:
            return await manager.get_token()

    assert asyncio.run(on_asyncio()) == sync_token
    assert trio.run(on_trio) == sync_token
    assert fleet.token_requests() == 1


def test_a_token_the_api_rejected_is_not_adopted_again_from_the_fleet(fleet: Fleet) -> None:
    a, b = fleet.process(), fleet.process()
    token = a.get_token()
    assert b.get_token() == token
    fleet.server.sandbox.inject(Fault.status(401), path="/api/balance")
    response = a.request("POST", f"/api/balance?id={DEFAULT_MERCHANT_ID}")
    assert response.status == 200  # replayed with a new token, not the rejected one again
    fresh = a.get_token()
    assert fresh != token and fleet.token_requests() == 2
    b.invalidate(token)  # b meets the same 401 later: it adopts the fleet's new token
    assert b.get_token() == fresh and fleet.token_requests() == 2
