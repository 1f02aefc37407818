"""Memory of callers waiting on one token request, against the same tasks on a shared future.

    python -m tests.benchmarks.waiters [--tasks 10000]

10,000 tasks call ``get_token()`` on a cold manager whose token request never answers
(a transport that waits until released); traced memory (tracemalloc) is read once every
task is waiting. The reference: the same number of tasks, each awaiting one shared
future/event inside a coroutine of the same depth as the manager's call path. The loop's
timers are counted too (asyncio: ``loop._scheduled``, a private list read for the figure
only).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import tracemalloc
from collections.abc import Awaitable, Callable
from typing import Any

from eightyeightpay import AsyncTokenManager, MemoryStore, open_trio_token_manager
from tests.support import NeverAnswers

from .common import Figures

KEY = "sk_test_sandbox_4f3a9c2e7b1d"
MERCHANT = "MCH-COL-TEST-12345"


def _traced(before: int) -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0] - before


async def _asyncio_side(tasks: int, manager_side: bool) -> tuple[int, int]:
    loop = asyncio.get_running_loop()
    shared: asyncio.Future[None] = loop.create_future()
    started = 0

    async def on_shared() -> None:
        nonlocal started
        started += 1
        await _depth(shared)

    gc.collect()
    before = tracemalloc.get_traced_memory()[0]
    if manager_side:
        manager = AsyncTokenManager(
            KEY, MERCHANT, store=MemoryStore(), transport=NeverAnswers(loop.create_future)
        )

        async def on_manager() -> None:
            nonlocal started
            started += 1
            await manager.get_token()

        crowd = [loop.create_task(on_manager()) for _ in range(tasks)]
    else:
        crowd = [loop.create_task(on_shared()) for _ in range(tasks)]
    while started < tasks:
        await asyncio.sleep(0)
    for _ in range(3):
        await asyncio.sleep(0)
    used = _traced(before)
    timers = len(loop._scheduled)  # type: ignore[attr-defined]
    for task in crowd:
        task.cancel()
    await asyncio.gather(*crowd, return_exceptions=True)
    if manager_side:
        await manager.aclose()
    return used, timers


async def _depth(shared: Awaitable[None]) -> None:
    # The manager's waiting path is get_token -> _get_token_slowly -> waiter.wait: the
    # reference awaits at the same depth, so frames are counted alike.
    async def slowly() -> None:
        async def wait() -> None:
            await shared

        await wait()

    await slowly()


def _asyncio(tasks: int) -> Figures:
    tracemalloc.start()
    try:
        reference, reference_timers = asyncio.run(_asyncio_side(tasks, False))
        ours, timers = asyncio.run(_asyncio_side(tasks, True))
    finally:
        tracemalloc.stop()
    return {
        "tasks": tasks,
        "shared future, bytes": reference,
        "manager, bytes": ours,
        "ratio": ours / reference,
        "timers on the loop (reference, manager)": [reference_timers, timers],
    }


def _trio(tasks: int) -> Figures:
    import trio

    async def side(manager_side: bool) -> int:
        shared = trio.Event()
        started = 0
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        used = 0

        async def on_shared() -> None:
            nonlocal started
            started += 1
            await _depth(shared.wait())

        async def crowd(nursery: trio.Nursery, caller: Callable[[], Awaitable[None]]) -> int:
            """Start the tasks, read the memory once all wait, then cancel them."""
            for _ in range(tasks):
                nursery.start_soon(caller)
            while started < tasks:
                await trio.sleep(0)
            await trio.testing.wait_all_tasks_blocked()
            used = _traced(before)
            nursery.cancel_scope.cancel()
            return used

        async with trio.open_nursery() as nursery:
            if manager_side:
                async with open_trio_token_manager(
                    KEY,
                    MERCHANT,
                    store=MemoryStore(),
                    transport=NeverAnswers(trio.sleep_forever),
                ) as manager:

                    async def on_manager() -> None:
                        nonlocal started
                        started += 1
                        await manager.get_token()

                    used = await crowd(nursery, on_manager)
            else:
                used = await crowd(nursery, on_shared)
        return used

    import trio.testing

    tracemalloc.start()
    try:
        reference = trio.run(side, False)
        ours = trio.run(side, True)
    finally:
        tracemalloc.stop()
    return {
        "tasks": tasks,
        "shared event, bytes": reference,
        "manager, bytes": ours,
        "ratio": ours / reference,
    }


def run(tasks: int = 10_000) -> Figures:
    """Both runtimes' figures."""
    return {"asyncio": _asyncio(tasks), "trio": _trio(tasks)}


def main(argv: list[str] | None = None) -> None:
    """Print the figures as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    args = parser.parse_args(argv)
    figures: Any = run(args.tasks)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
