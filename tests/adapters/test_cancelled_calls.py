"""A call cancelled while its send is out counts in the API window at the time it was cut;
one cancelled before its request was written is not counted.

The cancelled call reached 88Pay 5 s after its reservation and its answer never came: the
window counts it when it was cut, so the 61st call of that minute waits for 88Pay's minute
to end instead of drawing a 429. Deterministic: the in-process sandbox on a fake clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import trio

from eightyeightpay import DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, ManagerClosed, MemoryStore, Policy
from eightyeightpay.adapters.async_manager import AsyncTokenManager, open_trio_token_manager
from eightyeightpay.http import HttpRequest, HttpResponse
from eightyeightpay.plugins.sandbox import FakeClock, Fault, Sandbox, SandboxServer
from eightyeightpay.plugins.sandbox.async_transport import AsyncSandboxTransport

BALANCE = f"/api/balance?id={DEFAULT_MERCHANT_ID}"
CHARGES = "/api/transactions/charges"
CHARGE = {"flow": "PAYIN", "method_code": "PSE", "amount": 10, "currency": "COP", "country": "COL"}


class HangsAfterSending:
    """The first balance call reaches the sandbox 5 s late, then its answer never comes."""

    def __init__(self, sandbox: Sandbox, clock: FakeClock, hang: object) -> None:
        self.inner = AsyncSandboxTransport(sandbox, clock)
        self.clock = clock
        self.hang = hang  # an awaitable factory that never returns until cancelled
        self.hung = False

    async def send(self, request: HttpRequest, *, timeout: float) -> HttpResponse:
        if not self.hung and "/api/balance" in request.url:
            self.hung = True
            self.clock.advance(5.0)  # no connection free for 5 s
            await self.inner.send(request, timeout=timeout)  # 88Pay has it now
            await self.hang()  # type: ignore[operator]
        return await self.inner.send(request, timeout=timeout)

    async def aclose(self) -> None:
        await self.inner.aclose()


def _in_process(transport: HangsAfterSending, clock: FakeClock) -> dict[str, Any]:
    """A manager's options on the in-process sandbox, its waits moving the fake clock."""

    async def sleep(seconds: float) -> None:
        clock.advance(seconds)

    return {
        "transport": transport,
        "clock": clock,
        "sleep": sleep,
        "store": MemoryStore(),
        "rng": random.Random(1),
    }


async def _fill_the_minute_then_call(
    manager: Any, sandbox: Sandbox, clock: FakeClock, start: float
) -> None:
    """59 calls more, then one 60.5 s after the cut call's reservation: it must wait for
    88Pay's minute (the cut call counted at 5 s) and draw no 429."""
    for _ in range(59):
        assert (await manager.request("POST", BALANCE)).status == 200
    clock.advance(60.5 - (clock() - start))
    assert (await manager.request("POST", BALANCE)).status == 200
    stats = sandbox.stats()
    assert stats["api_requests"] == 61
    assert stats["rate_limited"] == 0
    assert clock() >= start + 65.0  # it went out once the cut call left 88Pay's minute


def test_an_asyncio_call_cancelled_in_flight_counts_when_it_was_cut() -> None:
    async def main() -> None:
        clock, sandbox = FakeClock(), Sandbox()
        transport = HangsAfterSending(sandbox, clock, lambda: asyncio.Event().wait())
        options = _in_process(transport, clock)
        async with AsyncTokenManager(DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, **options) as manager:
            start = clock()
            cut = asyncio.create_task(manager.request("POST", BALANCE))
            while not transport.hung:
                await asyncio.sleep(0)
            await asyncio.sleep(0)
            cut.cancel()
            await asyncio.gather(cut, return_exceptions=True)
            assert cut.cancelled()
            await _fill_the_minute_then_call(manager, sandbox, clock, start)

    asyncio.run(main())


def test_a_trio_call_cancelled_in_flight_counts_when_it_was_cut() -> None:
    async def main() -> None:
        clock, sandbox = FakeClock(), Sandbox()
        transport = HangsAfterSending(sandbox, clock, trio.sleep_forever)
        options = _in_process(transport, clock)
        async with open_trio_token_manager(
            DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, **options
        ) as manager:
            start = clock()
            with trio.CancelScope() as scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(manager.request, "POST", BALANCE)
                    while not transport.hung:
                        await trio.sleep(0)
                    await trio.sleep(0)
                    scope.cancel()
            await _fill_the_minute_then_call(manager, sandbox, clock, start)

    trio.run(main)


def _over_http(url: str, **more: Any) -> dict[str, Any]:
    """A manager's options for the sandbox served at ``url`` (plain HTTP on loopback)."""
    return {"base_url": url, "allow_http_loopback": True, "store": MemoryStore(), **more}


@contextlib.contextmanager
def _slow_balance() -> Iterator[SandboxServer]:
    """A sandbox server whose first balance call is answered after 0.5 s."""
    with SandboxServer(Sandbox()) as server:
        server.sandbox.inject(Fault.latency(0.5), path="/api/balance")
        yield server


async def _until(check: Callable[[], bool], sleep: Callable[[float], Awaitable[object]]) -> None:
    """Poll ``check`` every 10 ms until it holds (10 s at most): no step of a test races."""
    for _ in range(1000):
        if check():
            return
        await sleep(0.01)
    raise AssertionError("the condition never held")


def _received(server: SandboxServer) -> int:
    """API calls the sandbox has received (the slow one is then under way)."""
    return server.sandbox.stats()["api_requests"]


def _queued(manager: Any) -> int:
    """Callers that have queued for a connection of the manager's pools on this loop."""
    return sum(pool.queued for pool in manager._transport.pool_stats().values())


def test_asyncio_calls_cancelled_while_queued_for_a_connection_are_not_counted() -> None:
    """Five calls queue behind a slow one on a pool of one connection and are cancelled
    before any of them is sent: 88Pay saw one call, and the API window holds one."""

    async def main(server: SandboxServer) -> int:
        async with AsyncTokenManager(
            DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, **_over_http(server.url, max_connections=1)
        ) as manager:
            await manager.get_token()
            slow = asyncio.create_task(manager.request("POST", BALANCE))
            await _until(lambda: _received(server) == 1, asyncio.sleep)
            queued = [asyncio.create_task(manager.request("POST", BALANCE)) for _ in range(5)]
            await _until(lambda: _queued(manager) == 5, asyncio.sleep)
            for task in queued:
                task.cancel()
            results = await asyncio.gather(*queued, return_exceptions=True)
            assert all(isinstance(r, asyncio.CancelledError) for r in results)
            assert (await slow).status == 200
            return manager.stats().api_minute_spent

    with _slow_balance() as server:
        assert asyncio.run(main(server)) == 1
        assert server.sandbox.stats()["api_requests"] == 1


def test_trio_calls_cancelled_while_queued_for_a_connection_are_not_counted() -> None:
    async def main(server: SandboxServer) -> int:
        async with open_trio_token_manager(
            DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, **_over_http(server.url, max_connections=1)
        ) as manager:
            await manager.get_token()
            async with trio.open_nursery() as outer:
                outer.start_soon(manager.request, "POST", BALANCE)
                await _until(lambda: _received(server) == 1, trio.sleep)
                with trio.CancelScope() as scope:
                    async with trio.open_nursery() as nursery:
                        for _ in range(5):
                            nursery.start_soon(manager.request, "POST", BALANCE)
                        await _until(lambda: _queued(manager) == 5, trio.sleep)
                        scope.cancel()
            return manager.stats().api_minute_spent

    with _slow_balance() as server:
        assert trio.run(main, server) == 1
        assert server.sandbox.stats()["api_requests"] == 1


def test_a_charge_queued_for_a_connection_when_the_manager_closes_is_not_sent() -> None:
    """aclose() while a charge waits for the pool's one connection: when the connection
    comes free the charge is not sent (ManagerClosed, not processed), and nothing is charged."""

    async def main(server: SandboxServer) -> BaseException | None:
        manager = AsyncTokenManager(
            DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, **_over_http(server.url, max_connections=1)
        )
        await manager.get_token()
        slow = asyncio.create_task(manager.request("POST", BALANCE))
        await _until(lambda: _received(server) == 1, asyncio.sleep)
        queued = asyncio.create_task(manager.request("POST", CHARGES, json=CHARGE))
        await _until(lambda: _queued(manager) == 1, asyncio.sleep)
        await manager.aclose()
        results = await asyncio.gather(slow, queued, return_exceptions=True)
        assert not isinstance(results[0], BaseException)
        return results[1] if isinstance(results[1], BaseException) else None

    with _slow_balance() as server:
        error = asyncio.run(main(server))
        assert isinstance(error, ManagerClosed) and not error.may_have_been_processed
        assert server.sandbox.stats()["charges"] == 0


PROMPT = 5.0
"""How long a call waiting for the API limit may take to end once its manager closes
(it would otherwise wait about 60 s)."""


def test_aclose_ends_a_call_waiting_for_the_api_limit_at_once() -> None:
    """A manager allowed one API call a minute spends it; the next call waits for the next
    minute within its 90 s deadline... and the manager closes: the call raises ManagerClosed
    (not processed) without waiting out the minute, and nothing is charged."""

    async def on_asyncio(url: str) -> tuple[object, float]:
        manager = AsyncTokenManager(
            DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, **_over_http(url, policy=Policy(api_per_minute=1))
        )
        await manager.request("POST", BALANCE)
        waiting = asyncio.create_task(manager.request("POST", CHARGES, json=CHARGE, deadline=90))
        await _until(lambda: bool(manager._napping), asyncio.sleep)  # waiting for the minute
        started = time.monotonic()
        await manager.aclose()
        [outcome] = await asyncio.gather(waiting, return_exceptions=True)
        return outcome, time.monotonic() - started

    async def on_trio(url: str) -> tuple[object, float]:
        outcome: list[object] = []
        async with open_trio_token_manager(
            DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, **_over_http(url, policy=Policy(api_per_minute=1))
        ) as manager:
            await manager.request("POST", BALANCE)

            async def waiting() -> None:
                try:
                    await manager.request("POST", CHARGES, json=CHARGE, deadline=90)
                except ManagerClosed as error:
                    outcome.append(error)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(waiting)
                await _until(lambda: bool(manager._napping), trio.sleep)
                started = time.monotonic()
                await manager.aclose()
        return outcome[0] if outcome else None, time.monotonic() - started

    with SandboxServer(Sandbox()) as server:
        for outcome, took in (asyncio.run(on_asyncio(server.url)), trio.run(on_trio, server.url)):
            assert isinstance(outcome, ManagerClosed) and not outcome.may_have_been_processed
            assert took < PROMPT
        assert server.sandbox.stats()["charges"] == 0
