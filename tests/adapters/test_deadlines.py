"""The runtimes' deadline scopes, which bound every HTTP exchange of the async transport.

On asyncio the scopes of a loop share one timer; these tests hold it to asyncio.timeout's
semantics: the scope's own expiry becomes TimeoutError, any other cancellation goes
through, a closed scope never cancels anything later, and scopes that open and close in any
order each expire at their own deadline.
"""

from __future__ import annotations

import asyncio
import random

import pytest
import trio

from eightyeightpay.plugins.runtimes import AsyncioRuntime, TrioRuntime


async def _outcome(runtime: AsyncioRuntime, timeout: float, work: float) -> str:
    try:
        async with runtime.deadline(timeout):
            await asyncio.sleep(work)
    except TimeoutError:
        return "timed out"
    return "finished"


def test_asyncio_scope_turns_its_expiry_into_timeout_error() -> None:
    assert asyncio.run(_outcome(AsyncioRuntime(), 0.05, 30.0)) == "timed out"


def test_asyncio_scope_that_closed_in_time_cancels_nothing_later() -> None:
    async def main() -> str:
        runtime = AsyncioRuntime()
        async with runtime.deadline(0.05):
            await asyncio.sleep(0)
        await asyncio.sleep(0.2)  # well past the closed scope's deadline: not cancelled
        return "slept"

    assert asyncio.run(main()) == "slept"


def test_asyncio_cancellation_from_outside_goes_through_as_cancelled() -> None:
    async def main() -> None:
        runtime = AsyncioRuntime()
        started = asyncio.Event()

        async def inside() -> None:
            async with runtime.deadline(30.0):
                started.set()
                await asyncio.sleep(30.0)

        task = asyncio.create_task(inside())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())


def test_asyncio_scopes_opened_in_any_order_each_expire_at_their_own_deadline() -> None:
    """Deadlines earlier and later than the shared timer's, closing before or after them."""
    chooser = random.Random(7)
    cases = [(chooser.uniform(0.05, 0.4), chooser.choice([0.0, 0.01, 30.0])) for _ in range(60)]

    async def main() -> list[str]:
        runtime = AsyncioRuntime()
        tasks = []
        for timeout, work in cases:
            tasks.append(asyncio.create_task(_outcome(runtime, timeout, work)))
            await asyncio.sleep(0)  # the scopes open one after another
        return list(await asyncio.gather(*tasks))

    outcomes = asyncio.run(main())
    expected = ["timed out" if work == 30.0 else "finished" for _, work in cases]
    assert outcomes == expected


def test_asyncio_runtime_keeps_its_deadlines_working_on_a_new_loop() -> None:
    runtime = AsyncioRuntime()
    assert asyncio.run(_outcome(runtime, 0.05, 30.0)) == "timed out"
    assert asyncio.run(_outcome(runtime, 0.05, 30.0)) == "timed out"
    assert asyncio.run(_outcome(runtime, 30.0, 0.0)) == "finished"


def test_trio_scope_turns_its_expiry_into_timeout_error_and_lets_other_cancels_through() -> None:
    async def main() -> list[str]:
        outcomes: list[str] = []
        async with trio.open_nursery() as nursery:
            runtime = TrioRuntime(nursery)
            try:
                async with runtime.deadline(0.05):
                    await trio.sleep(30.0)
            except TimeoutError:
                outcomes.append("timed out")
            with trio.move_on_after(0.05) as outer:
                async with runtime.deadline(30.0):
                    await trio.sleep(30.0)
            outcomes.append("outer cancel went through" if outer.cancelled_caught else "?")
        return outcomes

    assert trio.run(main) == ["timed out", "outer cancel went through"]
