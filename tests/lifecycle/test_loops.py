"""One AsyncTokenManager under successive event loops (asyncio.run called again and again)."""

from __future__ import annotations

import asyncio
import random
from typing import Any

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
from tests.lifecycle.forking import in_child
from tests.lifecycle.workers import CHARGE
from tests.servers import RedisServer
from tests.support import https_options


def _manager(**options: Any) -> AsyncTokenManager:
    return AsyncTokenManager(DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, **options)


def _in_process(sandbox: Sandbox, store: MemoryStore | RedisStore) -> AsyncTokenManager:
    clock = FakeClock()
    transport = AsyncSandboxTransport(sandbox, clock)
    return _manager(transport=transport, clock=clock, store=store, rng=random.Random(5))


def _charge_in_three_loops(manager: AsyncTokenManager) -> list[int]:
    """A charge in each of 3 successive ``asyncio.run()`` calls; the echoed amounts."""

    async def charge(amount: int) -> int:
        answer = await manager.request(
            "POST", "/api/transactions/charges", json={**CHARGE, "amount": amount}
        )
        assert answer.status == 200
        return int(answer.data["amount"])

    amounts = [asyncio.run(charge(amount)) for amount in (1, 2, 3)]
    asyncio.run(manager.aclose())
    return amounts


@pytest.mark.parametrize("store", ["memory", "redis"])
def test_three_successive_asyncio_runs_charge_three_times_on_one_token(
    store: str, request: pytest.FixtureRequest
) -> None:
    sandbox = Sandbox()
    if store == "memory":
        chosen: MemoryStore | RedisStore = MemoryStore()
    else:
        chosen = RedisStore(request.getfixturevalue("redis_server").url)
    assert _charge_in_three_loops(_in_process(sandbox, chosen)) == [1, 2, 3]
    assert sandbox.stats()["token_requests"] == 1
    assert sandbox.stats()["charges"] == 3


def test_three_successive_asyncio_runs_over_real_https(https_server: SandboxServer) -> None:
    manager = _manager(**https_options(https_server))
    assert _charge_in_three_loops(manager) == [1, 2, 3]
    assert https_server.sandbox.stats()["token_requests"] == 1
    assert https_server.sandbox.stats()["charges"] == 3


def test_a_fleet_store_refreshes_through_each_loops_own_client(redis_server: RedisServer) -> None:
    sandbox, store = Sandbox(), RedisStore(redis_server.url)
    manager = _in_process(sandbox, store)

    async def fresh_token() -> None:
        token = await manager.get_token()
        manager.invalidate(token)  # as after a 401: the next loop refreshes through the store

    for _ in range(3):
        asyncio.run(fresh_token())
    asyncio.run(manager.aclose())
    assert sandbox.stats()["token_requests"] == 3
    assert store.health.outages == 0  # no store call failed on a client of a closed loop


def test_a_child_forked_after_asyncio_use_runs_its_own_loops(redis_server: RedisServer) -> None:
    sandbox, store = Sandbox(), RedisStore(redis_server.url)
    manager = _in_process(sandbox, store)

    async def fresh_token() -> None:
        manager.invalidate(await manager.get_token())  # through the store, on this loop's client

    asyncio.run(fresh_token())

    def child() -> list[int]:
        # The parent's loop, tasks and store clients are not the child's: a new loop works.
        asyncio.run(fresh_token())
        asyncio.run(manager.aclose())
        return [sandbox.stats()["token_requests"], store.health.outages]

    assert in_child(child) == [2, 0]
    asyncio.run(manager.aclose())
