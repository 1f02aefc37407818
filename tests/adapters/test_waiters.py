"""Light waiters: the callers of one flight share its deadline (one timer), on asyncio and trio."""

from __future__ import annotations

import asyncio

import trio

from eightyeightpay import (
    AsyncTokenManager,
    MemoryStore,
    Policy,
    RequestTimeout,
    Token,
    open_trio_token_manager,
)
from eightyeightpay.plugins.sandbox import DEFAULT_API_KEY, DEFAULT_MERCHANT_ID
from tests.support import NeverAnswers

POLICY = Policy(request_timeout=0.2)  # waiters give up 0.2 s + the 1 s grace after the send


def cold_manager() -> AsyncTokenManager:
    """A manager with no token whose token request never answers (on the running loop)."""
    return AsyncTokenManager(
        DEFAULT_API_KEY,
        DEFAULT_MERCHANT_ID,
        store=MemoryStore(),
        policy=POLICY,
        transport=NeverAnswers(asyncio.get_running_loop().create_future),
    )


def test_asyncio_waiters_of_one_flight_share_one_timer_and_time_out_together() -> None:
    async def main() -> tuple[list[Token | BaseException], int]:
        loop = asyncio.get_running_loop()
        manager = cold_manager()
        async with manager:
            tasks = [asyncio.create_task(manager.get_token()) for _ in range(1000)]
            for _ in range(5):
                await asyncio.sleep(0)
            # asyncio's list of scheduled timers, read for the count only
            timers = len([h for h in loop._scheduled if not h.cancelled()])  # type: ignore[attr-defined]
            outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        return outcomes, timers

    outcomes, timers = asyncio.run(main())
    assert all(isinstance(outcome, RequestTimeout) for outcome in outcomes)
    assert timers <= 2  # one for the 1,000 waiters (a timeout scope each used 1,000)


def test_asyncio_a_cancelled_waiter_leaves_the_others_waiting() -> None:
    async def main() -> list[Token | BaseException]:
        manager = cold_manager()
        async with manager:
            tasks = [asyncio.create_task(manager.get_token()) for _ in range(10)]
            await asyncio.sleep(0.05)
            tasks[0].cancel()
            return await asyncio.gather(*tasks, return_exceptions=True)

    outcomes = asyncio.run(main())
    assert isinstance(outcomes[0], asyncio.CancelledError)
    assert all(isinstance(outcome, RequestTimeout) for outcome in outcomes[1:])


def test_trio_waiters_time_out_at_the_flight_deadline_and_cancel_alone() -> None:
    outcomes: list[object] = []

    async def main() -> None:
        async with open_trio_token_manager(
            DEFAULT_API_KEY,
            DEFAULT_MERCHANT_ID,
            store=MemoryStore(),
            policy=POLICY,
            transport=NeverAnswers(trio.sleep_forever),
        ) as manager:

            async def caller(scope: trio.CancelScope | None = None) -> None:
                try:
                    if scope is None:
                        await manager.get_token()
                    else:
                        with scope:
                            await manager.get_token()
                        outcomes.append("cancelled")
                except RequestTimeout as error:
                    outcomes.append(error)

            cancelled = trio.CancelScope()
            async with trio.open_nursery() as nursery:
                for _ in range(500):
                    nursery.start_soon(caller)
                nursery.start_soon(caller, cancelled)
                await trio.sleep(0.05)
                cancelled.cancel()

    trio.run(main)
    assert outcomes.count("cancelled") == 1
    assert sum(isinstance(outcome, RequestTimeout) for outcome in outcomes) == 500
