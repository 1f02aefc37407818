"""One AsyncTokenManager under successive event loops (asyncio.run called again and again)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator

import pytest

from eightyeightpay import (
    DEFAULT_API_KEY,
    DEFAULT_MERCHANT_ID,
    AsyncSandboxTransport,
    AsyncTokenManager,
    FakeClock,
    MemoryStore,
    RedisStore,
    Sandbox,
    SandboxServer,
)
from tests.lifecycle.workers import CHARGE
from tests.servers import RedisServer


@pytest.fixture
def redis_url() -> Iterator[str]:
    server = RedisServer()
    server.start()
    yield server.url
    server.close()


@pytest.mark.parametrize("store", ["memory", "redis"])
def test_three_successive_asyncio_runs_charge_three_times_on_one_token(
    store: str, request: pytest.FixtureRequest
) -> None:
    clock, sandbox = FakeClock(), Sandbox()
    chosen = (
        MemoryStore() if store == "memory" else RedisStore(request.getfixturevalue("redis_url"))
    )
    manager = AsyncTokenManager(
        DEFAULT_API_KEY,
        DEFAULT_MERCHANT_ID,
        transport=AsyncSandboxTransport(sandbox, clock),
        clock=clock,
        store=chosen,
        rng=random.Random(5),
    )

    async def charge(amount: int) -> int:
        answer = await manager.request(
            "POST", "/api/transactions/charges", json={**CHARGE, "amount": amount}
        )
        assert answer.status == 200
        return int(answer.data["amount"])

    amounts = [asyncio.run(charge(amount)) for amount in (1, 2, 3)]
    asyncio.run(manager.aclose())
    assert amounts == [1, 2, 3]
    assert sandbox.stats()["token_requests"] == 1
    assert sandbox.stats()["charges"] == 3


def test_a_fleet_store_refreshes_through_each_loops_own_client(redis_url: str) -> None:
    clock, sandbox = FakeClock(), Sandbox()
    store = RedisStore(redis_url)
    manager = AsyncTokenManager(
        DEFAULT_API_KEY,
        DEFAULT_MERCHANT_ID,
        transport=AsyncSandboxTransport(sandbox, clock),
        clock=clock,
        store=store,
        rng=random.Random(5),
    )

    async def fresh_token() -> None:
        token = await manager.get_token()
        manager.invalidate(token)  # as after a 401: the next loop refreshes through the store

    for _ in range(3):
        asyncio.run(fresh_token())
    asyncio.run(manager.aclose())
    assert sandbox.stats()["token_requests"] == 3
    assert store.health.outages == 0  # no store call failed on a client of a closed loop


def test_three_successive_asyncio_runs_over_real_https(https_server: SandboxServer) -> None:
    assert https_server.certificates is not None
    manager = AsyncTokenManager(
        DEFAULT_API_KEY,
        DEFAULT_MERCHANT_ID,
        base_url=https_server.url,
        ca_bundle=str(https_server.certificates.ca_file),
        store=MemoryStore(),
    )

    async def charge(amount: int) -> int:
        answer = await manager.request(
            "POST", "/api/transactions/charges", json={**CHARGE, "amount": amount}
        )
        return int(answer.data["amount"])

    amounts = [asyncio.run(charge(amount)) for amount in (1, 2, 3)]
    asyncio.run(manager.aclose())
    assert amounts == [1, 2, 3]
    assert https_server.sandbox.stats()["token_requests"] == 1
    assert https_server.sandbox.stats()["charges"] == 3
