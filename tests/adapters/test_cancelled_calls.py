"""A call cancelled while its send is out counts in the API window at the time it was cut.

The cancelled call reached 88Pay 5 s after its reservation and its answer never came: the
window counts it when it was cut, so the 61st call of that minute waits for 88Pay's minute
to end instead of drawing a 429. Deterministic: the in-process sandbox on a fake clock.
"""

from __future__ import annotations

import asyncio
import random

import trio

from eightyeightpay import DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, MemoryStore
from eightyeightpay.adapters.async_manager import AsyncTokenManager, open_trio_token_manager
from eightyeightpay.http import HttpRequest, HttpResponse
from eightyeightpay.plugins.sandbox import FakeClock, Sandbox
from eightyeightpay.plugins.sandbox.async_transport import AsyncSandboxTransport

BALANCE = f"/api/balance?id={DEFAULT_MERCHANT_ID}"


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


def _check(sandbox: Sandbox, clock: FakeClock, start: float) -> None:
    stats = sandbox.stats()
    assert stats["api_requests"] == 61
    assert stats["rate_limited"] == 0
    assert clock() >= start + 65.0  # it went out once the cut call left 88Pay's minute


def test_an_asyncio_call_cancelled_in_flight_counts_when_it_was_cut() -> None:
    async def main() -> None:
        clock, sandbox = FakeClock(), Sandbox()
        transport = HangsAfterSending(sandbox, clock, lambda: asyncio.Event().wait())

        async def sleep(seconds: float) -> None:
            clock.advance(seconds)

        async with AsyncTokenManager(
            DEFAULT_API_KEY,
            DEFAULT_MERCHANT_ID,
            transport=transport,
            clock=clock,
            sleep=sleep,
            store=MemoryStore(),
            rng=random.Random(1),
        ) as manager:
            start = clock()
            cut = asyncio.create_task(manager.request("POST", BALANCE))
            while not transport.hung:
                await asyncio.sleep(0)
            await asyncio.sleep(0)
            cut.cancel()
            await asyncio.gather(cut, return_exceptions=True)
            assert cut.cancelled()
            for _ in range(59):
                assert (await manager.request("POST", BALANCE)).status == 200
            clock.advance(60.5 - (clock() - start))
            assert (await manager.request("POST", BALANCE)).status == 200
            _check(sandbox, clock, start)

    asyncio.run(main())


def test_a_trio_call_cancelled_in_flight_counts_when_it_was_cut() -> None:
    async def main() -> None:
        clock, sandbox = FakeClock(), Sandbox()
        transport = HangsAfterSending(sandbox, clock, trio.sleep_forever)

        async def sleep(seconds: float) -> None:
            clock.advance(seconds)

        async with open_trio_token_manager(
            DEFAULT_API_KEY,
            DEFAULT_MERCHANT_ID,
            transport=transport,
            clock=clock,
            sleep=sleep,
            store=MemoryStore(),
            rng=random.Random(1),
        ) as manager:
            start = clock()
            with trio.CancelScope() as scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(manager.request, "POST", BALANCE)
                    while not transport.hung:
                        await trio.sleep(0)
                    await trio.sleep(0)
                    scope.cancel()
            for _ in range(59):
                assert (await manager.request("POST", BALANCE)).status == 200
            clock.advance(60.5 - (clock() - start))
            assert (await manager.request("POST", BALANCE)).status == 200
            _check(sandbox, clock, start)

    trio.run(main)
