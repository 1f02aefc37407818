"""A connection given back while callers queue goes to the caller that queued first.

The pools are driven directly, with stand-in connections, so the order is exact: a caller
that gives its connection back and asks again at once queues behind those already
waiting (before, it took the connection again ahead of them, and under 1,000 asyncio tasks
on 10 connections some waited past their deadline). A caller cancelled or timed out just
as it is handed a connection passes it on; one that leaves the queue takes nothing with it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
import trio

from eightyeightpay.errors import RequestTimeout
from eightyeightpay.plugins import h11_transport, urllib3_transport
from eightyeightpay.plugins.runtimes import AsyncioRuntime, TrioRuntime


class _FakeHTTPConnection:
    """What the threaded pool reads of a kept connection."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.is_connected = True
        self.is_closed = False

    def close(self) -> None:
        self.is_closed = True


class _FakeStream:
    def is_stale(self) -> bool:
        return False

    async def aclose(self) -> None:
        pass


def _async_connection(name: str) -> Any:
    connection: Any = h11_transport._Connection(_FakeStream())  # type: ignore[arg-type]
    connection.name = name
    return connection


def _wait_for(condition: Any) -> None:
    give_up = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < give_up
        time.sleep(0.001)


def test_threads_a_returned_connection_goes_to_the_first_in_the_queue() -> None:
    pool = urllib3_transport._HostPool(("https", "api.invalid", 443), 1)  # type: ignore[arg-type]
    assert pool.acquire(time.monotonic() + 10, "api.invalid", 10) is None  # A may open one
    connection: Any = _FakeHTTPConnection("the one")
    got: list[str] = []

    def queue(name: str) -> None:
        handed = pool.acquire(time.monotonic() + 10, "api.invalid", 10)
        assert handed is connection
        got.append(name)
        pool.release(handed, keep=True)

    callers = []
    for number, name in enumerate(("B", "C", "D"), 1):
        callers.append(threading.Thread(target=queue, args=(name,)))
        callers[-1].start()
        _wait_for(lambda number=number: len(pool.turns) == number)
    pool.release(connection, keep=True)
    queue("A")  # asks again at once: queues behind B, C and D
    for caller in callers:
        caller.join(10)
    assert got == ["B", "C", "D", "A"]
    assert (pool.open, pool.opened, pool.queued, len(pool.turns)) == (1, 1, 4, 0)


def test_threads_a_caller_that_times_out_leaves_the_queue_and_a_closed_place_moves_on() -> None:
    pool = urllib3_transport._HostPool(("https", "api.invalid", 443), 1)  # type: ignore[arg-type]
    assert pool.acquire(time.monotonic() + 10, "api.invalid", 10) is None
    with pytest.raises(RequestTimeout) as caught:
        pool.acquire(time.monotonic() + 0.05, "api.invalid", 0.05)
    assert caught.value.may_have_been_sent is False
    assert len(pool.turns) == 0
    result: list[object] = []
    waiter = threading.Thread(
        target=lambda: result.append(pool.acquire(time.monotonic() + 10, "api.invalid", 10))
    )
    waiter.start()
    _wait_for(lambda: len(pool.turns) == 1)
    broken: Any = _FakeHTTPConnection("broken")
    pool.release(broken, keep=False)  # its place goes to the waiter, who opens a new one
    waiter.join(10)
    assert result == [None] and broken.is_closed
    assert (pool.open, pool.opened) == (1, 2)


async def _order(runtime: Any, sleep: Any, spawn: Any) -> tuple[list[str], Any]:
    pool = h11_transport._Pool(("key", None), 1)  # type: ignore[arg-type]
    assert await pool.acquire(runtime, 10) is None  # A may open one
    connection = _async_connection("the one")
    got: list[str] = []

    async def queue(name: str) -> None:
        handed = await pool.acquire(runtime, 10)
        assert handed is connection
        got.append(name)
        await pool.release(handed, keep=True)

    for number, name in enumerate(("B", "C", "D"), 1):
        spawn(queue, name)
        while len(pool.turns) < number:
            await sleep(0)
    await pool.release(connection, keep=True)
    await queue("A")
    while len(got) < 4:
        await sleep(0.001)
    return got, pool


def test_asyncio_a_returned_connection_goes_to_the_first_in_the_queue() -> None:
    async def main() -> tuple[list[str], Any]:
        tasks: list[asyncio.Task[None]] = []

        def spawn(fn: Any, name: str) -> None:
            tasks.append(asyncio.create_task(fn(name)))

        result = await _order(AsyncioRuntime(), asyncio.sleep, spawn)
        await asyncio.gather(*tasks)
        return result

    got, pool = asyncio.run(main())
    assert got == ["B", "C", "D", "A"]
    assert (pool.open, pool.opened, pool.queued, len(pool.turns)) == (1, 1, 4, 0)


def test_trio_a_returned_connection_goes_to_the_first_in_the_queue() -> None:
    async def main() -> tuple[list[str], Any]:
        async with trio.open_nursery() as nursery:

            def spawn(fn: Any, name: str) -> None:
                nursery.start_soon(fn, name)

            return await _order(TrioRuntime(nursery), trio.sleep, spawn)

    got, pool = trio.run(main)
    assert got == ["B", "C", "D", "A"]
    assert (pool.open, pool.opened, pool.queued, len(pool.turns)) == (1, 1, 4, 0)


def test_asyncio_a_caller_cancelled_as_it_is_handed_a_connection_passes_it_on() -> None:
    async def main() -> tuple[object, Any]:
        runtime = AsyncioRuntime()
        pool = h11_transport._Pool(("key", None), 1)  # type: ignore[arg-type]
        assert await pool.acquire(runtime, 10) is None
        connection = _async_connection("the one")
        first = asyncio.create_task(pool.acquire(runtime, 10))
        second = asyncio.create_task(pool.acquire(runtime, 10))
        while len(pool.turns) < 2:
            await asyncio.sleep(0)
        await pool.release(connection, keep=True)  # handed to the first...
        first.cancel()  # ...which is cancelled before it runs
        with pytest.raises(asyncio.CancelledError):
            await first
        return await second, pool

    handed, pool = asyncio.run(main())
    assert getattr(handed, "name", None) == "the one"
    assert (pool.open, len(pool.turns), len(pool.idle)) == (1, 0, 0)


def test_asyncio_a_caller_that_times_out_leaves_the_queue() -> None:
    async def main() -> Any:
        runtime = AsyncioRuntime()
        pool = h11_transport._Pool(("key", None), 1)  # type: ignore[arg-type]
        assert await pool.acquire(runtime, 10) is None
        with pytest.raises(TimeoutError):
            await pool.acquire(runtime, 0.05)
        await pool.release(_async_connection("back"), keep=True)
        return pool

    pool = asyncio.run(main())
    assert (pool.open, len(pool.turns), len(pool.idle)) == (1, 0, 1)


def test_threads_places_a_raised_cap_adds_go_to_the_queue() -> None:
    pool = urllib3_transport._HostPool(("https", "api.invalid", 443), 1)  # type: ignore[arg-type]
    assert pool.acquire(time.monotonic() + 10, "api.invalid", 10) is None
    result: list[object] = []
    waiters = [
        threading.Thread(
            target=lambda: result.append(pool.acquire(time.monotonic() + 10, "api.invalid", 10))
        )
        for _ in range(3)
    ]
    for number, waiter in enumerate(waiters, 1):
        waiter.start()
        _wait_for(lambda number=number: len(pool.turns) == number)
    pool.raise_cap(3)  # two new places: two of the three open a connection
    _wait_for(lambda: len(result) == 2)
    assert result == [None, None] and len(pool.turns) == 1
    assert (pool.open, pool.opened) == (3, 3)
    pool.release(None, keep=False)  # the place of a connection that could not be opened
    for waiter in waiters:
        waiter.join(10)
    assert result == [None, None, None] and (pool.open, pool.opened) == (3, 4)


def test_asyncio_places_a_raised_cap_adds_go_to_the_queue() -> None:
    async def main() -> tuple[list[object], Any]:
        runtime = AsyncioRuntime()
        pool = h11_transport._Pool(("key", None), 1)  # type: ignore[arg-type]
        assert await pool.acquire(runtime, 10) is None
        tasks = [asyncio.create_task(pool.acquire(runtime, 10)) for _ in range(3)]
        while len(pool.turns) < 3:
            await asyncio.sleep(0)
        pool.raise_cap(3)
        await asyncio.wait(tasks, timeout=10, return_when=asyncio.FIRST_COMPLETED)
        await asyncio.sleep(0)
        handed = [task.result() for task in tasks if task.done()]
        left = len(pool.turns)
        await pool.release(None, keep=False)
        await asyncio.gather(*tasks)
        return [*handed, left], pool

    outcome, pool = asyncio.run(main())
    assert outcome == [None, None, 1]
    assert (pool.open, pool.opened, len(pool.turns)) == (3, 4, 0)
