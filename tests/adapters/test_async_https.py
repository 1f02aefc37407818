"""asyncio and trio managers against the HTTPS loopback emulator: stampedes, cancellation,
failures, and no blocking on the loop."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
import trio
import urllib3

from eightyeightpay import ManagerClosed, ServerError, Token
from eightyeightpay.adapters.async_manager import AsyncTokenManager, open_trio_token_manager
from eightyeightpay.plugins.memory import MemoryStore
from eightyeightpay.plugins.sandbox import (
    DEFAULT_API_KEY,
    DEFAULT_MERCHANT_ID,
    Fault,
    SandboxServer,
)
from tests.servers import cli_sandbox
from tests.support import https_options

TASKS = 10_000


async def wait_for_token_request(server: SandboxServer, sleep: Callable[[float], object]) -> None:
    for _ in range(500):
        if server.sandbox.stats()["token_requests"] >= 1:
            return
        await sleep(0.01)  # type: ignore[misc]
    raise AssertionError("the token request never reached the emulator")


# --------------------------------------------------------------------------- asyncio


def test_asyncio_10000_tasks_on_a_cold_cache_make_one_request(https_server: SandboxServer) -> None:
    async def main() -> list[Token]:
        async with AsyncTokenManager(
            DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, **https_options(https_server)
        ) as manager:
            return await asyncio.gather(*(manager.get_token() for _ in range(TASKS)))

    tokens = asyncio.run(main())
    assert len(tokens) == TASKS and len(set(tokens)) == 1
    assert https_server.sandbox.stats()["token_requests"] == 1


def test_asyncio_a_third_cancelled_in_flight_still_one_request(https_server: SandboxServer) -> None:
    https_server.sandbox.inject(Fault.latency(0.5))
    chooser = random.Random(11)

    async def main() -> tuple[list[object], set[int]]:
        async with AsyncTokenManager(
            DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, **https_options(https_server)
        ) as manager:
            tasks = [asyncio.create_task(manager.get_token()) for _ in range(TASKS)]
            await wait_for_token_request(https_server, asyncio.sleep)
            cancelled = set(chooser.sample(range(TASKS), TASKS // 3))
            for index in cancelled:
                tasks[index].cancel()
            return await asyncio.gather(*tasks, return_exceptions=True), cancelled

    results, cancelled = asyncio.run(main())
    assert https_server.sandbox.stats()["token_requests"] == 1
    for index, result in enumerate(results):
        if index in cancelled:
            assert isinstance(result, asyncio.CancelledError)
        else:
            assert isinstance(result, Token)
    assert len({r for r in results if isinstance(r, Token)}) == 1


def test_asyncio_first_caller_cancelled_the_request_completes_for_others(
    https_server: SandboxServer,
) -> None:
    https_server.sandbox.inject(Fault.latency(0.3))

    async def main() -> list[Token]:
        async with AsyncTokenManager(
            DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, **https_options(https_server)
        ) as manager:
            first = asyncio.create_task(manager.get_token())
            await wait_for_token_request(https_server, asyncio.sleep)
            others = [asyncio.create_task(manager.get_token()) for _ in range(100)]
            await asyncio.sleep(0)
            first.cancel()
            with pytest.raises(asyncio.CancelledError):
                await first
            return await asyncio.gather(*others)

    tokens = asyncio.run(main())
    assert len(set(tokens)) == 1
    assert https_server.sandbox.stats()["token_requests"] == 1


def gather_tokens(server: SandboxServer, deadline: float | None) -> list[object]:
    async def main() -> list[object]:
        async with AsyncTokenManager(
            DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, **https_options(server)
        ) as manager:
            async with asyncio.timeout(60):  # hang detection only
                return await asyncio.gather(
                    *(manager.get_token(deadline=deadline) for _ in range(TASKS)),
                    return_exceptions=True,
                )

    return asyncio.run(main())


def test_asyncio_failing_request_gives_every_fail_fast_waiter_the_typed_error(
    https_server: SandboxServer,
) -> None:
    https_server.sandbox.inject(Fault.status(500))
    results = gather_tokens(https_server, deadline=0)
    assert all(isinstance(r, ServerError) for r in results)
    assert https_server.sandbox.stats()["token_requests"] == 1


def test_asyncio_waiters_share_one_retry_within_the_default_deadline(
    https_server: SandboxServer,
) -> None:
    https_server.sandbox.inject(Fault.status(500))
    results = gather_tokens(https_server, deadline=None)
    assert all(isinstance(r, Token) for r in results), {type(r) for r in results}
    assert len({r.access_token for r in results if isinstance(r, Token)}) == 1
    assert https_server.sandbox.stats()["token_requests"] == 2


def test_asyncio_debug_mode_reports_no_slow_callback_in_a_full_flow(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The emulator runs in its own process: its threads must not compete with the event
    # loop for this process's GIL, or their TLS work would show up as slow callbacks.
    caplog.set_level(logging.WARNING, logger="asyncio")
    with cli_sandbox("--tls") as info:
        # Setup (registry, TLS context) is done before the loop runs, as an application
        # does at start-up; the old objects of the test session are frozen so that a
        # collection of the whole suite's garbage is not blamed on a callback.
        manager = AsyncTokenManager(
            info["api_key"],
            info["merchant_id"],
            base_url=info["url"],
            ca_bundle=info["ca_file"],
            store=MemoryStore(),
        )

        async def main() -> None:
            loop = asyncio.get_running_loop()
            loop.slow_callback_duration = 0.1
            async with manager:
                await asyncio.sleep(0)
                # debug mode records where every task was created: keep the crowd modest
                tasks = []
                for _ in range(10):
                    tasks += [asyncio.create_task(manager.get_token()) for _ in range(20)]
                    await asyncio.sleep(0)
                await asyncio.gather(*tasks)
                for _ in range(5):
                    response = await manager.request(
                        "POST", f"/api/balance?id={info['merchant_id']}"
                    )
                    assert response.status == 200
                charge = await manager.request(
                    "POST",
                    "/api/transactions/charges",
                    json={
                        "flow": "PAYIN",
                        "method_code": "PSE",
                        "amount": 1,
                        "currency": "COP",
                        "country": "COL",
                    },
                )
                assert charge.status == 200

        gc.collect()
        gc.freeze()
        try:
            asyncio.run(main(), debug=True)
        finally:
            gc.unfreeze()
        http = urllib3.PoolManager(ca_certs=info["ca_file"], retries=False)
        stats = json.loads(http.request("GET", info["stats"]).data)
        http.clear()
    slow = [r.getMessage() for r in caplog.records if "took" in r.getMessage()]
    assert slow == []
    assert stats["charges"] == 1 and stats["token_requests"] == 1


def test_asyncio_close_leaves_no_task_running(https_server: SandboxServer) -> None:
    async def main() -> set[asyncio.Task[object]]:
        before = asyncio.all_tasks()
        async with AsyncTokenManager(
            DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, **https_options(https_server)
        ) as manager:
            https_server.sandbox.inject(Fault.latency(5))
            waiter = asyncio.create_task(manager.get_token())
            await wait_for_token_request(https_server, asyncio.sleep)
            waiter.cancel()
        await asyncio.sleep(0)
        return asyncio.all_tasks() - before

    assert asyncio.run(main()) == set()


# --------------------------------------------------------------------------- trio


@asynccontextmanager
async def trio_manager(server: SandboxServer) -> AsyncIterator[object]:
    async with open_trio_token_manager(
        DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, **https_options(server)
    ) as manager:
        yield manager


def test_trio_10000_tasks_on_a_cold_cache_make_one_request(https_server: SandboxServer) -> None:
    tokens: list[Token] = []

    async def main() -> None:
        async with open_trio_token_manager(
            DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, **https_options(https_server)
        ) as manager:

            async def one() -> None:
                tokens.append(await manager.get_token())

            async with trio.open_nursery() as nursery:
                for _ in range(TASKS):
                    nursery.start_soon(one)

    trio.run(main)
    assert len(tokens) == TASKS and len(set(tokens)) == 1
    assert https_server.sandbox.stats()["token_requests"] == 1


def test_trio_a_third_cancelled_in_flight_still_one_request(https_server: SandboxServer) -> None:
    https_server.sandbox.inject(Fault.latency(0.5))
    chooser = random.Random(12)
    outcomes: dict[int, object] = {}
    cancelled = set(chooser.sample(range(TASKS), TASKS // 3))

    async def main() -> None:
        async with open_trio_token_manager(
            DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, **https_options(https_server)
        ) as manager:
            scopes = {index: trio.CancelScope() for index in range(TASKS)}

            async def one(index: int) -> None:
                with scopes[index]:
                    outcomes[index] = await manager.get_token()
                    return
                outcomes[index] = "cancelled"

            async with trio.open_nursery() as nursery:
                for index in range(TASKS):
                    nursery.start_soon(one, index)
                await wait_for_token_request(https_server, trio.sleep)
                for index in cancelled:
                    scopes[index].cancel()

    trio.run(main)
    assert https_server.sandbox.stats()["token_requests"] == 1
    for index in range(TASKS):
        if index in cancelled:
            assert outcomes[index] == "cancelled"
        else:
            assert isinstance(outcomes[index], Token)


def test_trio_first_caller_cancelled_the_request_completes_for_others(
    https_server: SandboxServer,
) -> None:
    https_server.sandbox.inject(Fault.latency(0.3))
    tokens: list[Token] = []
    first_outcome: list[str] = []

    async def main() -> None:
        async with open_trio_token_manager(
            DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, **https_options(https_server)
        ) as manager:
            first_scope = trio.CancelScope()

            async def first() -> None:
                with first_scope:
                    await manager.get_token()
                    first_outcome.append("token")
                    return
                first_outcome.append("cancelled")

            async def other() -> None:
                tokens.append(await manager.get_token())

            async with trio.open_nursery() as nursery:
                nursery.start_soon(first)
                await wait_for_token_request(https_server, trio.sleep)
                for _ in range(100):
                    nursery.start_soon(other)
                await trio.sleep(0)
                first_scope.cancel()

    trio.run(main)
    assert first_outcome == ["cancelled"]
    assert len(tokens) == 100 and len(set(tokens)) == 1
    assert https_server.sandbox.stats()["token_requests"] == 1


@pytest.mark.parametrize(("deadline", "requests"), [(0, 1), (None, 2)])
def test_trio_waiters_share_a_failing_request_and_its_retry(
    https_server: SandboxServer, deadline: float | None, requests: int
) -> None:
    """Failing fast, every waiter gets the typed error; with the default deadline, the one
    retry the backoff allows, and its token."""
    https_server.sandbox.inject(Fault.status(500))
    results: list[object] = []

    async def main() -> None:
        async with open_trio_token_manager(
            DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, **https_options(https_server)
        ) as manager:

            async def one() -> None:
                try:
                    results.append(await manager.get_token(deadline=deadline))
                except ServerError as error:
                    results.append(error)

            with trio.fail_after(60):  # hang detection only
                async with trio.open_nursery() as nursery:
                    for _ in range(TASKS):
                        nursery.start_soon(one)

    trio.run(main)
    assert len(results) == TASKS
    expected = ServerError if deadline == 0 else Token
    assert all(isinstance(r, expected) for r in results)
    assert https_server.sandbox.stats()["token_requests"] == requests


def test_asyncio_closing_before_the_request_starts_leaves_no_flight_open(
    https_server: SandboxServer,
) -> None:
    store = MemoryStore()

    async def main() -> None:
        opts = {**https_options(https_server), "store": store}
        manager = AsyncTokenManager(DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, **opts)
        waiter = asyncio.create_task(manager.get_token())
        await asyncio.sleep(0)  # the waiter decided to refresh; the request task has not run
        await manager.aclose()
        with pytest.raises((ManagerClosed, asyncio.CancelledError)):
            async with asyncio.timeout(5):
                await waiter
        async with AsyncTokenManager(DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, **opts) as other:
            assert isinstance(await other.get_token(), Token)

    asyncio.run(main())
    assert https_server.sandbox.stats()["token_requests"] == 1


def test_trio_aclose_inside_the_block_does_not_cancel_the_callers_code(
    https_server: SandboxServer,
) -> None:
    reached: list[int] = []

    async def main() -> None:
        async with open_trio_token_manager(
            DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, **https_options(https_server)
        ) as manager:
            await manager.get_token()
            await manager.aclose()
            reached.append(1)
            await trio.sleep(0)
            reached.append(2)

    trio.run(main)
    assert reached == [1, 2]
