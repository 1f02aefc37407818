"""One failure, many callers: each caller raises an error of its own.

A failed refresh is handed to every waiter. Raising one shared exception instance in each of
them would append every caller's frames to that instance's traceback, without end, and show
one caller the frames of all the others.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
import traceback

from eightyeightpay import EightyEightPayError, ServerError
from eightyeightpay.adapters.async_manager import AsyncTokenManager
from eightyeightpay.adapters.sync import TokenManager
from eightyeightpay.http import HttpRequest, HttpResponse
from eightyeightpay.plugins.memory import MemoryStore
from eightyeightpay.plugins.sandbox import (
    DEFAULT_API_KEY,
    DEFAULT_MERCHANT_ID,
    FakeClock,
    Fault,
    Sandbox,
    SandboxTransport,
)
from eightyeightpay.plugins.sandbox.async_transport import AsyncSandboxTransport

CALLERS = 500


def _assert_each_has_its_own(errors: list[BaseException]) -> None:
    assert len(errors) == CALLERS
    assert all(isinstance(error, ServerError) for error in errors)
    assert len({id(error) for error in errors}) == CALLERS  # no instance is shared
    depth = max(len(traceback.extract_tb(error.__traceback__)) for error in errors)
    assert depth < 20, f"a traceback of {depth} frames: frames of other callers in it"


def test_asyncio_waiters_of_a_failed_refresh_each_raise_their_own_error() -> None:
    async def main() -> list[BaseException]:
        clock, sandbox = FakeClock(), Sandbox()
        sandbox.inject(Fault.status(500))
        async with AsyncTokenManager(
            DEFAULT_API_KEY,
            DEFAULT_MERCHANT_ID,
            transport=AsyncSandboxTransport(sandbox, clock),
            clock=clock,
            store=MemoryStore(),
            rng=random.Random(1),
        ) as manager:
            results = await asyncio.gather(
                *(manager.get_token(deadline=0) for _ in range(CALLERS)), return_exceptions=True
            )
        assert sandbox.stats()["token_requests"] == 1  # they all waited for the one request
        return [result for result in results if isinstance(result, BaseException)]

    _assert_each_has_its_own(asyncio.run(main()))


class HeldTransport(SandboxTransport):
    """Holds the token request until every other caller is waiting for it."""

    def __init__(self, sandbox: Sandbox, clock: FakeClock) -> None:
        super().__init__(sandbox, clock)
        self.manager: TokenManager | None = None

    def send(self, request: HttpRequest, *, timeout: float) -> HttpResponse:
        assert self.manager is not None
        manager = self.manager
        give_up = time.monotonic() + 60  # a bound for a broken test, not a timing assertion
        while time.monotonic() < give_up:
            with manager._slot.lock:  # threads waiting for the flight, on its one condition
                waiting = sum(waiter.waiting for waiter in manager._waiters.values())
            if waiting == CALLERS - 1:
                break
            time.sleep(0.005)
        return super().send(request, timeout=timeout)


def test_threads_waiting_for_a_failed_refresh_each_raise_their_own_error() -> None:
    clock, sandbox = FakeClock(), Sandbox()
    sandbox.inject(Fault.status(500))
    transport = HeldTransport(sandbox, clock)
    errors: list[BaseException] = []
    with TokenManager(
        DEFAULT_API_KEY,
        DEFAULT_MERCHANT_ID,
        transport=transport,
        clock=clock,
        store=MemoryStore(),
        rng=random.Random(1),
    ) as manager:
        transport.manager = manager

        def caller() -> None:
            try:
                manager.get_token(deadline=0)
            except EightyEightPayError as error:
                errors.append(error)

        threads = [threading.Thread(target=caller) for _ in range(CALLERS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert sandbox.stats()["token_requests"] == 1  # one caller sent it, the others waited
    _assert_each_has_its_own(errors)
