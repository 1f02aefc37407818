"""A store server restarted within half a second: every client retries once on a fresh
connection, so no process goes degraded and the fleet makes no extra token request."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from eightyeightpay.adapters.async_manager import AsyncTokenManager
from eightyeightpay.plugins.memcached_store import MemcachedStore
from eightyeightpay.plugins.redis_store import RedisStore
from eightyeightpay.plugins.sandbox import DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, SandboxServer
from tests.plugins.fleet_support import Fleet
from tests.servers import MemcachedServer, RedisServer, ServerProcess


@pytest.fixture(params=["redis", "memcached"])
def world(
    request: pytest.FixtureRequest, https_server: SandboxServer
) -> Iterator[tuple[Fleet, ServerProcess]]:
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
    yield fleet, server
    fleet.close()
    server.close()


def test_a_quick_restart_degrades_no_process_and_costs_no_extra_request(
    world: tuple[Fleet, ServerProcess],
) -> None:
    fleet, server = world

    async def main() -> None:
        store = fleet.store()
        async with AsyncTokenManager(
            DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, store=store, **fleet.options
        ) as on_asyncio:
            threads = [fleet.process() for _ in range(3)]
            token = threads[0].get_token()
            assert all(m.get_token() == token for m in threads)
            assert await on_asyncio.get_token() == token  # every client has a pooled connection
            assert fleet.token_requests() == 1
            server.stop()
            server.start()  # the restarted server lost the token; the pooled sockets are stale
            for manager in threads:
                manager.invalidate(token)
            on_asyncio.invalidate(token)
            fresh = threads[0].get_token()
            assert fresh != token
            assert all(m.get_token() == fresh for m in threads[1:])
            assert await on_asyncio.get_token() == fresh
        assert fleet.token_requests() == 2  # one for the fleet after the restart, not one each
        assert all(s.health.outages == 0 and s.health.healthy for s in fleet.stores)

    asyncio.run(main())
