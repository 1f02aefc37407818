"""Suspend-proof time: the default clock counts suspended time; a suspend hands out no expired token."""

from __future__ import annotations

import asyncio
import functools
import time

from eightyeightpay import AsyncTokenManager, FakeClock, MemoryStore, TokenManager, default_clock
from tests.conftest import InProcess
from tests.lifecycle.workers import CHARGE


def test_the_default_clock_counts_suspend_where_the_platform_has_such_a_clock() -> None:
    boottime = getattr(time, "CLOCK_BOOTTIME", None)
    if boottime is None:  # not Linux: the monotonic clock is what there is
        assert default_clock is time.monotonic
        return
    assert isinstance(default_clock, functools.partial)
    assert default_clock.func is time.clock_gettime
    assert default_clock.args == (boottime,)
    before = time.clock_gettime(boottime)
    assert before <= default_clock() <= time.clock_gettime(boottime)


def test_every_manager_uses_the_default_clock_unless_given_one() -> None:
    with TokenManager("sk_test_clock_000001", "MCH-COL-CLOCK-1", store=MemoryStore()) as threaded:
        assert threaded._clock is default_clock
    manager = AsyncTokenManager("sk_test_clock_000001", "MCH-COL-CLOCK-1", store=MemoryStore())
    assert manager._clock is default_clock
    asyncio.run(manager.aclose())


class Monotonic:
    """What ``time.monotonic`` does across a suspend: it stands still while the host sleeps."""

    def __init__(self, clock: FakeClock) -> None:
        self._clock = clock
        self.suspended = 0.0

    def __call__(self) -> float:
        return self._clock() - self.suspended


def test_after_a_simulated_two_minute_suspend_no_expired_token_is_handed_out(
    inproc: InProcess,
) -> None:
    # inproc.clock plays CLOCK_BOOTTIME: the sandbox's time and the clock that counts the
    # suspend; Monotonic plays the clock that does not.
    boottime = inproc.manager(store=MemoryStore())
    monotonic = Monotonic(inproc.clock)
    frozen = inproc.manager(store=MemoryStore(), clock=monotonic)
    before = boottime.get_token()
    stale_view = frozen.get_token()

    inproc.clock.advance(120.0)  # the host sleeps two minutes
    monotonic.suspended += 120.0

    after = boottime.get_token()
    assert after != before and inproc.clock() < after.usable_until
    charge = boottime.request("POST", "/api/transactions/charges", json={**CHARGE, "amount": 3})
    assert charge.status == 200
    assert inproc.stat("token_requests") == 3  # boottime's two, frozen's one
    # What a clock blind to the suspend does: it hands out the token the server expired
    # 65 s ago (what issue 11 saw), which this test would catch on the default clock.
    assert frozen.get_token() is stale_view
