"""Stateful fuzzing of the managers against the in-process emulator on a fake clock.

Hypothesis drives random calls, time jumps, injected faults, cancellations and store
outages. After every step: no expired token was handed out, 88Pay's windows were kept, at
most one token request was in flight, and every waiter finished or is waiting on the one
request in flight. ``EIGHTYEIGHTPAY_FUZZ_EXAMPLES`` raises the number of examples for a
longer run: ``EIGHTYEIGHTPAY_FUZZ_EXAMPLES=2000 python -m pytest tests/fuzz``.
"""

from __future__ import annotations

import asyncio
import os
import random
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from eightyeightpay import EightyEightPayError, Policy, Token
from eightyeightpay.adapters import sync
from eightyeightpay.adapters.async_manager import AsyncTokenManager
from eightyeightpay.adapters.sync import ManualBackground, TokenManager
from eightyeightpay.http import HttpRequest, HttpResponse
from eightyeightpay.machine import Settled
from eightyeightpay.plugins.fleet import FleetStore
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
from eightyeightpay.ports import FleetOperations
from tests.fleet_sim import SimStore

EXAMPLES = int(os.environ.get("EIGHTYEIGHTPAY_FUZZ_EXAMPLES", "40"))
FAULTS = st.sampled_from(
    [
        Fault.status(500),
        Fault.status(502, body=b"<html>bad gateway</html>", content_type="text/html"),
        Fault.reset(),
        Fault.refuse(),
        Fault.truncated(),
        Fault.latency(3.0),
        Fault.malformed(b'{"status":"Success","code":200,"data":{}}'),
        Fault.status(
            429,
            body=b'{"status":"Error","code":429,"message":"Rate limit exceeded.","retry_after":7}',
        ),
    ]
)
JUMPS = st.sampled_from([0.0, 0.01, 0.5, 1.35, 5.0, 9.9, 30.0, 48.7, 61.0, 400.0])


class Window:
    """Every token request the emulator received, to check 88Pay's windows and overlap."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.sends: list[float] = []
        self.in_flight = 0
        self.most_in_flight = 0

    def check(self) -> None:
        now = self.clock()
        assert sum(1 for t in self.sends if t > now - 60) <= 10
        assert sum(1 for t in self.sends if t > now - 3600) <= 100
        assert self.most_in_flight <= 1


class CountingTransport:
    """Wraps the emulator's transport and records token requests and their overlap."""

    def __init__(self, inner: SandboxTransport, window: Window) -> None:
        self.inner = inner
        self.window = window

    def send(self, request: HttpRequest, *, timeout: float) -> HttpResponse:
        if request.path != "/api/auth/token":
            return self.inner.send(request, timeout=timeout)
        self.window.sends.append(self.window.clock())
        self.window.in_flight += 1
        self.window.most_in_flight = max(self.window.most_in_flight, self.window.in_flight)
        try:
            return self.inner.send(request, timeout=timeout)
        finally:
            self.window.in_flight -= 1

    def close(self) -> None:
        self.inner.close()


class SimFleetStore(FleetStore):
    """A fleet store over the simulated store, which the machine can take down."""

    name = "simulated"

    def __init__(self, store: SimStore) -> None:
        super().__init__()
        self.store = store

    def operations(self) -> FleetOperations:
        return self.store


class SingleThreadedWaiter(sync._Waiter):
    """The threaded manager's waiter, failing the run instead of blocking it."""

    def wait(self, timeout: float) -> Settled | None:
        assert self.settled is not None, "a caller blocked, but no other thread exists to wake it"
        return self.settled


class ThreadedManagerRules(RuleBasedStateMachine):
    """The threaded manager, two processes on one simulated fleet store that can fail.

    Everything runs on one thread (refresh-ahead on manual backgrounds, sleeps on the fake
    clock), so a caller that blocks would hang the run; its waiter fails the run instead.
    """

    @initialize(seed=st.integers(0, 10_000), fleet=st.booleans())
    def start(self, seed: int, fleet: bool) -> None:
        self.saved_waiter = sync._Waiter
        sync._Waiter = SingleThreadedWaiter  # type: ignore[misc]
        # A flight that could outlast its caller's deadline (a fleet flight may wait for
        # another process's lock) runs on a thread of its own; here it runs at once, on
        # this one, before its caller waits.
        self.saved_run_apart = TokenManager.__dict__["_run_apart"]
        TokenManager._run_apart = staticmethod(lambda job: job())  # type: ignore[method-assign]
        self.clock = FakeClock()
        self.sandbox = Sandbox()
        self.window = Window(self.clock)
        self.backgrounds = [ManualBackground(), ManualBackground()]
        self.shared = SimStore(self.clock)
        stores: list[Any] = (
            [SimFleetStore(self.shared), SimFleetStore(self.shared)]
            if fleet
            else [MemoryStore()] * 2
        )
        self.managers = [
            TokenManager(
                DEFAULT_API_KEY,
                DEFAULT_MERCHANT_ID,
                transport=CountingTransport(
                    SandboxTransport(self.sandbox, self.clock), self.window
                ),
                clock=self.clock,
                sleep=self.clock.advance,
                background=self.backgrounds[i],
                store=stores[i],
                rng=random.Random(seed + i),
            )
            for i in range(2)
        ]
        self.fleet = fleet

    @rule(which=st.integers(0, 1), deadline=st.sampled_from([0.0, None, 20.0]))
    def caller_asks(self, which: int, deadline: float | None) -> None:
        try:
            token = self.managers[which].get_token(deadline=deadline)
        except EightyEightPayError:
            return
        assert self.clock() < token.usable_until
        assert token.expires_at - self.clock() > 0

    @rule(which=st.integers(0, 1))
    def background_runs(self, which: int) -> None:
        self.backgrounds[which].run_pending()

    @rule(seconds=JUMPS)
    def time_passes(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule(fault=FAULTS)
    def fault_is_injected(self, fault: Fault) -> None:
        self.sandbox.inject(fault)

    @precondition(lambda self: getattr(self, "fleet", False))
    @rule()
    def store_fails_or_returns(self) -> None:
        self.shared.down = not self.shared.down

    @invariant()
    def limits_and_overlap_hold(self) -> None:
        if hasattr(self, "window"):
            if not self.fleet:  # one process's own windows; a fleet's are checked by the store
                self.window.check()
            assert self.window.most_in_flight <= 1

    def teardown(self) -> None:
        for manager in getattr(self, "managers", []):
            manager.close()
        if hasattr(self, "saved_waiter"):
            sync._Waiter = self.saved_waiter  # type: ignore[misc]
            TokenManager._run_apart = self.saved_run_apart  # type: ignore[method-assign]


TestThreadedManager = ThreadedManagerRules.TestCase
TestThreadedManager.settings = settings(
    max_examples=EXAMPLES, stateful_step_count=50, deadline=None
)


class AsyncioManagerRules(RuleBasedStateMachine):
    """The asyncio manager: many waiting tasks, random cancellations, faults, time jumps."""

    @initialize(seed=st.integers(0, 10_000))
    def start(self, seed: int) -> None:
        self.loop = asyncio.new_event_loop()
        self.clock = FakeClock()
        self.sandbox = Sandbox()
        self.window = Window(self.clock)
        self.chooser = random.Random(seed)
        inner = AsyncSandboxTransport(self.sandbox, self.clock)
        window = self.window

        class Counting:
            async def send(self, request: HttpRequest, *, timeout: float) -> HttpResponse:
                if request.path == "/api/auth/token":
                    window.sends.append(window.clock())
                    window.in_flight += 1
                    window.most_in_flight = max(window.most_in_flight, window.in_flight)
                    try:
                        await asyncio.sleep(0)  # a request takes a loop turn: waiters pile up
                        return await inner.send(request, timeout=timeout)
                    finally:
                        window.in_flight -= 1
                return await inner.send(request, timeout=timeout)

            async def aclose(self) -> None:
                await inner.aclose()

        self.pausing = 0
        clock = self.clock

        async def sleep(seconds: float) -> None:
            """A backoff on the fake clock: over once the test has moved time past it."""
            self.pausing += 1
            try:
                target = clock() + seconds
                while clock() < target:
                    await asyncio.sleep(0)
            finally:
                self.pausing -= 1

        self.manager = AsyncTokenManager(
            DEFAULT_API_KEY,
            DEFAULT_MERCHANT_ID,
            transport=Counting(),
            clock=self.clock,
            sleep=sleep,
            store=MemoryStore(),
            rng=random.Random(seed),
            policy=Policy(),
        )
        self.tasks: list[asyncio.Task[tuple[float, Token]]] = []

    async def _ask(self) -> tuple[float, Token]:
        """A caller's ``get_token()``, with the fake time at which it got its token.

        The check is made against that time: by the time the test looks, another task (a
        refresh held up by an injected latency) may have moved the fake clock on.
        """
        token = await self.manager.get_token()
        return self.clock(), token

    def _run(self, turns: int = 3) -> None:
        async def turn() -> None:
            for _ in range(turns):
                await asyncio.sleep(0)

        self.loop.run_until_complete(turn())
        for task in [t for t in self.tasks if t.done()]:
            self.tasks.remove(task)
            if not task.cancelled() and task.exception() is None:
                handed_out_at, token = task.result()
                assert handed_out_at < token.usable_until

    @rule(count=st.integers(1, 20))
    def callers_ask(self, count: int) -> None:
        self.tasks += [self.loop.create_task(self._ask()) for _ in range(count)]
        self._run(1)

    @precondition(lambda self: bool(getattr(self, "tasks", [])))
    @rule(share=st.floats(0.0, 1.0))
    def some_callers_are_cancelled(self, share: float) -> None:
        for task in self.tasks:
            if self.chooser.random() < share:
                task.cancel()
        self._run()

    @rule()
    def loop_runs(self) -> None:
        self._run(5)

    @rule(seconds=JUMPS)
    def time_passes(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self._run()

    @rule(fault=FAULTS)
    def fault_is_injected(self, fault: Fault) -> None:
        self.sandbox.inject(fault)

    @invariant()
    def limits_overlap_and_waiters_hold(self) -> None:
        if not hasattr(self, "window"):
            return
        self.window.check()
        if self.manager._slot.machine.flight is None:
            self._run(3)  # let wake-ups already scheduled arrive
            stranded = [t for t in self.tasks if not t.done()]
            # Only a caller waiting out a backoff its deadline allows may wait meanwhile.
            assert len(stranded) <= self.pausing, "callers wait while no request is in flight"

    def teardown(self) -> None:
        if not hasattr(self, "loop"):
            return
        # Every waiter finishes: with time moving, each gets a token or a typed error.
        for _ in range(20):
            if not self.tasks:
                break
            self.clock.advance(5)
            self._run(10)
        assert self.tasks == [], "a waiter was stranded"
        self.loop.run_until_complete(self.manager.aclose())
        self.loop.close()


TestAsyncioManager = AsyncioManagerRules.TestCase
TestAsyncioManager.settings = settings(max_examples=EXAMPLES, stateful_step_count=40, deadline=None)
