"""One face over the three managers, so each scenario is written once and run on all."""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import trio

from eightyeightpay import ApiResponse, Token
from eightyeightpay.adapters.async_manager import AsyncTokenManager, open_trio_token_manager
from eightyeightpay.adapters.sync import ManualBackground, TokenManager
from eightyeightpay.plugins.memory import MemoryStore
from eightyeightpay.plugins.sandbox import (
    DEFAULT_API_KEY,
    DEFAULT_MERCHANT_ID,
    FakeClock,
    Sandbox,
    SandboxTransport,
)
from eightyeightpay.plugins.sandbox.async_transport import AsyncSandboxTransport

RUNTIMES = ("sync", "asyncio", "trio")


class Harness:
    """A manager of one runtime, an in-process sandbox and a fake clock."""

    def __init__(
        self,
        runtime: str,
        manager: Any,
        sandbox: Sandbox,
        clock: FakeClock,
        background: ManualBackground | None,
    ) -> None:
        self.runtime = runtime
        self.manager = manager
        self.sandbox = sandbox
        self.clock = clock
        self._background = background

    def stat(self, name: str) -> int:
        return self.sandbox.stats()[name]

    async def get_token(self, deadline: float | None = None) -> Token:
        if self.runtime == "sync":
            return self.manager.get_token(deadline=deadline)  # type: ignore[no-any-return]
        return await self.manager.get_token(deadline=deadline)  # type: ignore[no-any-return]

    async def request(self, method: str, path: str, **options: Any) -> ApiResponse:
        if self.runtime == "sync":
            return self.manager.request(method, path, **options)  # type: ignore[no-any-return]
        return await self.manager.request(method, path, **options)  # type: ignore[no-any-return]

    async def settle(self) -> None:
        """Let background refreshes run."""
        if self._background is not None:
            self._background.run_pending()
        elif self.runtime == "asyncio":
            for _ in range(3):
                await asyncio.sleep(0)
        else:
            for _ in range(3):
                await trio.sleep(0)

    async def crowd(self, callers: int) -> list[Token | BaseException]:
        """``callers`` concurrent get_token() calls on this runtime."""
        results: list[Token | BaseException] = []

        async def one() -> None:
            try:
                results.append(await self.get_token())
            except Exception as error:
                results.append(error)

        if self.runtime == "sync":
            barrier = threading.Barrier(callers)

            def thread() -> None:
                barrier.wait()
                asyncio.run(one())

            workers = [threading.Thread(target=thread) for _ in range(callers)]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()
        elif self.runtime == "asyncio":
            await asyncio.gather(*(one() for _ in range(callers)))
        else:
            async with trio.open_nursery() as nursery:
                for _ in range(callers):
                    nursery.start_soon(one)
        return results


@contextlib.asynccontextmanager
async def open_harness(
    runtime: str,
    sandbox: Sandbox,
    clock: FakeClock,
    api_key: str,
    merchant_id: str,
    **extra: Any,
) -> AsyncIterator[Harness]:
    options: dict[str, Any] = {"clock": clock, "store": MemoryStore(), "rng": random.Random(5)}
    options.update(extra)
    if runtime == "sync":
        background = ManualBackground()
        options.setdefault("sleep", clock.advance)  # a manager's wait moves the fake time
        with TokenManager(
            api_key,
            merchant_id,
            transport=SandboxTransport(sandbox, clock),
            background=background,
            **options,
        ) as sync_manager:
            yield Harness(runtime, sync_manager, sandbox, clock, background)
    elif runtime == "asyncio":

        async def asyncio_sleep(seconds: float) -> None:
            clock.advance(seconds)
            await asyncio.sleep(0)

        options.setdefault("sleep", asyncio_sleep)
        async with AsyncTokenManager(
            api_key,
            merchant_id,
            transport=AsyncSandboxTransport(sandbox, clock),
            **options,
        ) as asyncio_manager:
            yield Harness(runtime, asyncio_manager, sandbox, clock, None)
    else:

        async def trio_sleep(seconds: float) -> None:
            clock.advance(seconds)
            await trio.sleep(0)

        options.setdefault("sleep", trio_sleep)
        async with open_trio_token_manager(
            api_key,
            merchant_id,
            transport=AsyncSandboxTransport(sandbox, clock),
            **options,
        ) as trio_manager:
            yield Harness(runtime, trio_manager, sandbox, clock, None)


Scenario = Callable[[Harness], Awaitable[None]]


def run_scenario(
    runtime: str,
    scenario: Scenario,
    *,
    sandbox: Sandbox | None = None,
    api_key: str = DEFAULT_API_KEY,
    merchant_id: str = DEFAULT_MERCHANT_ID,
    clock: FakeClock | None = None,
    **options: Any,
) -> None:
    """Run ``scenario`` against a fresh harness of ``runtime`` (``options`` go to the manager)."""
    world = sandbox or Sandbox()
    clock = clock or FakeClock()

    async def main() -> None:
        async with open_harness(runtime, world, clock, api_key, merchant_id, **options) as harness:
            await scenario(harness)

    if runtime == "trio":
        trio.run(main)
    else:
        asyncio.run(main())
