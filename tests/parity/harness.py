"""One face over the three managers, so each scenario is written once and run on all.

A scenario runs against the in-process sandbox (the default) or, with ``over_http=True``,
against the same emulator served by a loopback ``SandboxServer`` on the same fake clock,
through the managers' own HTTP transports (urllib3 for the threaded manager, h11 for the
asyncio and trio ones): what both paths answer alike can be asserted once for both."""

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
    SandboxServer,
    SandboxTransport,
)
from eightyeightpay.plugins.sandbox.async_transport import AsyncSandboxTransport

RUNTIMES = ("sync", "asyncio", "trio")
PATHS = ("in-process", "http")
"""How a scenario reaches the emulator: an in-process transport, or loopback HTTP."""


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
    *,
    over_http: bool = False,
    **extra: Any,
) -> AsyncIterator[Harness]:
    options: dict[str, Any] = {"clock": clock, "store": MemoryStore(), "rng": random.Random(5)}
    options.update(extra)
    with contextlib.ExitStack() as stack:
        if over_http:
            server = stack.enter_context(SandboxServer(sandbox, clock=clock))
            options.update(base_url=server.url, allow_http_loopback=True)
        async with _open_manager(
            runtime, sandbox, clock, api_key, merchant_id, over_http, options
        ) as h:
            yield h


@contextlib.asynccontextmanager
async def _open_manager(
    runtime: str,
    sandbox: Sandbox,
    clock: FakeClock,
    api_key: str,
    merchant_id: str,
    over_http: bool,
    options: dict[str, Any],
) -> AsyncIterator[Harness]:
    """The manager of ``runtime`` on the in-process transport, or its own over HTTP."""
    if runtime == "sync":
        background = ManualBackground()
        options.setdefault("sleep", clock.advance)  # a manager's wait moves the fake time
        if not over_http:
            options["transport"] = SandboxTransport(sandbox, clock)
        with TokenManager(
            api_key,
            merchant_id,
            background=background,
            **options,
        ) as sync_manager:
            yield Harness(runtime, sync_manager, sandbox, clock, background)
    elif runtime == "asyncio":

        async def asyncio_sleep(seconds: float) -> None:
            clock.advance(seconds)
            await asyncio.sleep(0)

        options.setdefault("sleep", asyncio_sleep)
        if not over_http:
            options["transport"] = AsyncSandboxTransport(sandbox, clock)
        async with AsyncTokenManager(api_key, merchant_id, **options) as asyncio_manager:
            yield Harness(runtime, asyncio_manager, sandbox, clock, None)
    else:

        async def trio_sleep(seconds: float) -> None:
            clock.advance(seconds)
            await trio.sleep(0)

        options.setdefault("sleep", trio_sleep)
        if not over_http:
            options["transport"] = AsyncSandboxTransport(sandbox, clock)
        async with open_trio_token_manager(api_key, merchant_id, **options) as trio_manager:
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
    over_http: bool = False,
    **options: Any,
) -> None:
    """Run ``scenario`` against a fresh harness of ``runtime`` (``options`` go to the manager),
    in-process or, with ``over_http``, through a loopback ``SandboxServer``."""
    world = sandbox or Sandbox()
    clock = clock or FakeClock()

    async def main() -> None:
        async with open_harness(
            runtime, world, clock, api_key, merchant_id, over_http=over_http, **options
        ) as harness:
            await scenario(harness)

    if runtime == "trio":
        trio.run(main)
    else:
        asyncio.run(main())
