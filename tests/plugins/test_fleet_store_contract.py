"""The contract every fleet store keeps, run on Redis and on Memcached alike."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import trio

from eightyeightpay import RateLimited, Token
from eightyeightpay.adapters.async_manager import AsyncTokenManager, open_trio_token_manager
from eightyeightpay.plugins.memcached_store import MemcachedStore
from eightyeightpay.plugins.redis_store import RedisStore
from eightyeightpay.plugins.sandbox import (
    DEFAULT_API_KEY,
    DEFAULT_MERCHANT_ID,
    Fault,
    SandboxServer,
)
from tests.plugins.fleet_support import Fleet
from tests.servers import MemcachedServer, RedisServer, ServerProcess


class StoreWorld:
    """A fleet on a test-owned store server, which the test may stop and restart."""

    def __init__(self, fleet: Fleet, server: ServerProcess) -> None:
        self.fleet = fleet
        self.server = server


@pytest.fixture(params=["redis", "memcached"])
def world(request: pytest.FixtureRequest, https_server: SandboxServer) -> Iterator[StoreWorld]:
    server: ServerProcess
    if request.param == "redis":
        server = RedisServer()
        url = server.url
        make: Any = lambda **options: RedisStore(url, **options)  # noqa: E731
    else:
        server = MemcachedServer()
        address = server.address
        make = lambda **options: MemcachedStore(address, **options)  # noqa: E731
    server.start()
    fleet = Fleet(https_server, make)
    yield StoreWorld(fleet, server)
    fleet.close()
    server.close()


def test_processes_share_one_token(world: StoreWorld) -> None:
    fleet = world.fleet
    a, b, c = fleet.process(), fleet.process(), fleet.process()
    assert len({a.get_token(), b.get_token(), c.get_token()}) == 1
    assert fleet.token_requests() == 1


def test_stats_show_the_fleets_spend_as_the_store_counts_it(world: StoreWorld) -> None:
    fleet = world.fleet
    sender, adopter = fleet.process(), fleet.process()
    assert sender.get_token() == adopter.get_token()
    mine = adopter.stats()
    assert (mine.minute_spent, mine.budget_scope, mine.fleet_minute_spent) == (0, "process", None)
    both = adopter.stats(fleet=True)
    assert (both.fleet_minute_spent, both.fleet_hour_spent) == (1, 1)
    assert (both.minute_remaining, both.hour_remaining, both.budget_scope) == (9, 99, "fleet")
    world.server.stop()
    down = adopter.stats(fleet=True)  # the store cannot count: the process's figures stand
    assert (down.budget_scope, down.minute_remaining) == ("process", 10)


def test_a_429_cools_down_the_whole_fleet(world: StoreWorld) -> None:
    fleet = world.fleet
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


def test_store_down_degrades_without_errors_logs_once_and_rejoins(
    world: StoreWorld, caplog: pytest.LogCaptureFixture
) -> None:
    fleet = world.fleet
    caplog.set_level(logging.WARNING, logger="eightyeightpay")
    world.server.stop()
    a, b = fleet.process(), fleet.process()
    for manager in (a, b):
        for _ in range(100):
            assert isinstance(manager.get_token(), Token)
    assert fleet.token_requests() == 2  # each process alone: one request each
    outage_lines = [r for r in caplog.records if "unavailable" in r.getMessage()]
    assert len(outage_lines) == 2  # once per store (process), not per call
    world.server.start()
    c, d = fleet.process(), fleet.process()
    assert c.get_token() == d.get_token()
    assert fleet.token_requests() == 3


def test_async_and_trio_managers_share_the_fleet_token(world: StoreWorld) -> None:
    fleet = world.fleet
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


def test_async_managers_refresh_once_for_the_fleet(world: StoreWorld) -> None:
    fleet = world.fleet

    async def on_asyncio() -> Token:
        async with AsyncTokenManager(
            DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, store=fleet.store(), **fleet.options
        ) as manager:
            return await manager.get_token()

    async def on_trio() -> Token:
        async with open_trio_token_manager(
            DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, store=fleet.store(), **fleet.options
        ) as manager:
            return await manager.get_token()

    first = asyncio.run(on_asyncio())  # the asyncio manager refreshes through the store
    assert trio.run(on_trio) == first == fleet.process().get_token()
    assert fleet.token_requests() == 1


def test_a_token_the_api_rejected_is_not_adopted_again_from_the_fleet(world: StoreWorld) -> None:
    fleet = world.fleet
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
