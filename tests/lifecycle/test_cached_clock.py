"""The cached path's clock: ``time.time()`` in front of the boot clock, and what a step costs.

A manager on the default clock (``CLOCK_BOOTTIME``) checks its cached token on the wall
clock (``time.time``, which also counts suspended time and takes no argument); the slow path
decides everything on the boot clock and arms the cache with a window of at most the
token's lead, ending by its ``fresh_until``. Here both clocks are fakes: ``inproc.clock``
plays ``CLOCK_BOOTTIME`` (and the sandbox's time, so a token the server expired gets a 401),
and :class:`Wall` plays ``CLOCK_REALTIME``: it follows the boot clock, suspend included,
and steps forward or back when told to. The bounds asserted are the ones docs/performance.md
documents ("The cached path's clock").
"""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio

from eightyeightpay import (
    AsyncTokenManager,
    ConfigurationError,
    FakeClock,
    MemoryStore,
    Token,
    TokenManager,
    open_trio_token_manager,
)
from eightyeightpay.adapters import lifecycle
from eightyeightpay.plugins.sandbox import DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, SandboxTransport
from eightyeightpay.plugins.sandbox.async_transport import AsyncSandboxTransport
from tests.conftest import InProcess
from tests.lifecycle.workers import CHARGE


class Wall:
    """``CLOCK_REALTIME`` beside a fake ``CLOCK_BOOTTIME``: the same pace, its own steps."""

    def __init__(self, boot: FakeClock) -> None:
        self._boot = boot
        self.offset = 1_000_000.0  # the two clocks never read alike

    def __call__(self) -> float:
        return self._boot() + self.offset

    def step(self, seconds: float) -> None:
        """An NTP step (or ``date -s``): forward when positive, back when negative."""
        self.offset += seconds


@pytest.fixture
def wall(inproc: InProcess, monkeypatch: pytest.MonkeyPatch) -> Wall:
    """Make ``inproc.clock`` the default clock and a :class:`Wall` its cache clock."""
    wall = Wall(inproc.clock)
    monkeypatch.setattr(lifecycle, "default_clock", inproc.clock)
    monkeypatch.setattr(lifecycle, "wall_clock", wall)
    return wall


def armed(manager: TokenManager) -> tuple[float, float]:
    """The cache's window on the wall clock: (since, until)."""
    token, _, since, until = manager._slot.memo
    assert token is not None
    return since, until


def test_the_default_clock_is_checked_on_time_time_and_an_injected_one_on_itself() -> None:
    with TokenManager("sk_test_clock_000002", "MCH-COL-CLOCK-2", store=MemoryStore()) as default:
        assert default._cache_clock is time.time
    clock = FakeClock()
    with TokenManager(
        "sk_test_clock_000002", "MCH-COL-CLOCK-2", store=MemoryStore(), clock=clock
    ) as injected:
        assert injected._cache_clock is clock


def test_managers_sharing_a_slot_must_share_its_clock(inproc: InProcess) -> None:
    """One token and one rate window per slot, kept on one clock: another clock is refused
    while a manager is in, and starts the slot afresh once every manager has closed.

    Read on another clock, the slot's times meant a token 88Pay had expired handed out as
    fresh, or a rate window that never emptied.
    """
    first = inproc.manager()
    token = first.get_token()
    assert first.get_token() is token  # armed
    other_clock = FakeClock(inproc.clock())
    with pytest.raises(ConfigurationError) as refused:
        inproc.manager(clock=other_clock, sleep=other_clock.advance)
    message = str(refused.value)
    assert "on clock=FakeClock; this one is on clock=FakeClock" in message
    assert "same clock= object" in message and "private MemoryStore()" in message
    assert DEFAULT_API_KEY not in message
    assert first.get_token() is token and inproc.stat("token_requests") == 1
    # The same clock shares the slot; a clock and its now() are two objects.
    assert inproc.manager()._slot is first._slot
    with pytest.raises(ConfigurationError):
        inproc.manager(clock=inproc.clock.now)
    # Two reads of a bound method are equal: the same clock.
    store = MemoryStore()
    fresh = SandboxTransport(inproc.sandbox, inproc.clock)
    options: dict[str, Any] = {"transport": fresh, "store": store}
    with (
        TokenManager(DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, clock=other_clock.now, **options) as a,
        TokenManager(DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, clock=other_clock.now, **options) as b,
    ):
        assert a._slot is b._slot
    for manager in inproc.managers:
        manager.close()

    # Every manager has closed: a clock far behind starts the slot afresh. Read on it, the
    # old clock's window (the minute's token requests, all spent) would never empty.
    with inproc.manager(transport=SandboxTransport(inproc.sandbox, inproc.clock)) as spender:
        for _ in range(10):  # the first serves the cached token
            spender.invalidate(spender.get_token())
        assert inproc.stat("token_requests") == 10
    inproc.clock.advance(61.0)  # the sandbox's own minute has passed
    behind = FakeClock(1_000.0)
    with inproc.manager(
        clock=behind, sleep=behind.advance, transport=SandboxTransport(inproc.sandbox, inproc.clock)
    ) as again:
        renewed = again.get_token(deadline=0)
        assert renewed is not token and inproc.stat("token_requests") == 11
        assert again.get_token() is renewed


def test_a_manager_that_could_not_be_built_holds_no_clock(inproc: InProcess) -> None:
    """A constructor refused after the slot was found (here its transport's options) leaves
    the slot free for a manager on any clock."""
    other_clock = FakeClock()
    with pytest.raises(ConfigurationError, match="max_connections"):
        TokenManager(
            DEFAULT_API_KEY,
            DEFAULT_MERCHANT_ID,
            store=inproc.store,
            clock=other_clock,
            max_connections=0,
        )
    with inproc.manager() as manager:
        assert manager.get_token() is not None


def test_the_window_is_at_most_the_lead_and_ends_by_fresh_until(
    inproc: InProcess, wall: Wall
) -> None:
    manager = inproc.manager()
    token = manager.get_token()  # from the token request: nothing armed yet
    assert manager._slot.memo[0] is None
    assert manager.get_token() is token  # the slow path serves it and arms the cache
    since, until = armed(manager)
    lead = token.usable_until - token.fresh_until
    assert since == wall() and until - since == pytest.approx(lead)

    # Near the end of the fresh life the window is what is left of it.
    inproc.clock.advance(token.fresh_until - inproc.clock() - 0.5)
    assert manager.get_token() is token
    since, until = armed(manager)
    assert until - since == pytest.approx(0.5)
    inproc.clock.advance(0.5)  # fresh_until on the boot clock: the wall window has ended
    assert manager.get_token() is token  # stale: served by the slow path, refresh queued
    assert inproc.background.pending and wall() >= armed(manager)[1]


def test_a_forward_step_only_sends_a_caller_to_the_slow_path(inproc: InProcess, wall: Wall) -> None:
    manager = inproc.manager()
    token = manager.get_token()
    manager.get_token()
    first = armed(manager)
    wall.step(3600.0)  # the wall clock jumps an hour ahead
    assert manager.get_token() is token  # still fresh on the boot clock
    again = armed(manager)
    assert again[0] == pytest.approx(first[0] + 3600.0)
    assert inproc.stat("token_requests") == 1


def test_a_backward_step_larger_than_the_time_since_arming_is_refused(
    inproc: InProcess, wall: Wall
) -> None:
    manager = inproc.manager()
    token = manager.get_token()
    manager.get_token()
    since, _ = armed(manager)
    inproc.clock.advance(0.5)
    wall.step(-0.75)  # reads before the window's start
    assert wall() < since
    assert manager.get_token() is token
    assert armed(manager)[0] == wall()  # armed again, by the slow path
    assert inproc.stat("token_requests") == 1


def test_a_suspend_moves_both_clocks_and_hands_out_no_expired_token(
    inproc: InProcess, wall: Wall
) -> None:
    manager = inproc.manager()
    before = manager.get_token()
    manager.get_token()
    inproc.clock.advance(120.0)  # the host sleeps two minutes: both clocks move
    after = manager.get_token()
    assert after != before and inproc.clock() < after.usable_until
    assert inproc.stat("token_requests") == 2


def test_steady_callers_never_get_a_token_past_usable_until_plus_their_gap(
    inproc: InProcess, wall: Wall
) -> None:
    """Backward steps of every size up to 20 s, at every phase of a window, calls 0.25 s apart.

    Documented bound: a token is handed out at most ``s`` past its window's end (``s`` the
    step), and only a step that comes within one window plus one gap of the arming is not
    refused, so steady callers get no token more than one gap past its ``usable_until``.
    """
    gap = 0.25
    manager = inproc.manager()
    served: list[tuple[float, Token]] = []
    worst = 0.0
    for step in (0.1, 0.5, 1.0, 1.3, 2.0, 5.0, 12.0, 20.0):
        for phase in range(8):  # where in the call rhythm the step falls
            for call in range(240):  # a minute of calls: more than one token's life
                if call == 40 + phase:
                    wall.step(-step)
                token = manager.get_token()
                served.append((inproc.clock(), token))
                inproc.background.run_pending()
                inproc.clock.advance(gap)
    for now, token in served:
        assert now < token.usable_until + gap
        assert now < token.expires_at
        worst = max(worst, now - token.fresh_until)
    assert worst > 0  # the overstay past fresh_until is real; the bound is what holds


def test_an_idle_process_whose_wall_steps_back_into_an_old_window_pays_one_401(
    inproc: InProcess, wall: Wall
) -> None:
    """The documented worst case: no call for a while, then a backward step of about as long.

    The old window serves its token again for at most one window (the lead) of boot time;
    ``request()`` gets a 401 for it, invalidates exactly that token and sends once more.
    """
    manager = inproc.manager()
    token = manager.get_token()
    manager.get_token()
    since, until = armed(manager)
    inproc.clock.advance(100.0)  # idle: the token expired on the boot clock and the server
    wall.step(-100.0)  # ...and the wall clock is stepped back by as much
    assert since <= wall() < until
    assert manager.get_token() is token  # the expired token, from the old window
    charge = manager.request("POST", "/api/transactions/charges", json={**CHARGE, "amount": 5})
    assert charge.status == 200
    assert inproc.stat("token_requests") == 2  # the first token, and one after the 401
    assert manager.get_token() is not token
    # Without a request in between, the old window would have ended within the lead.
    assert until - since <= token.usable_until - token.fresh_until + 1e-9


@pytest.mark.parametrize("runtime", ["asyncio", "trio"])
def test_async_managers_arm_and_refuse_alike(runtime: str, wall: Wall, inproc: InProcess) -> None:
    """The async drivers arm the cache on the slow path and refuse a reading before it."""
    transport = AsyncSandboxTransport(inproc.sandbox, inproc.clock)

    async def main() -> None:
        options: dict[str, Any] = {
            "transport": transport,
            "store": MemoryStore(),
            "clock": inproc.clock,
            "sleep": _advancing(inproc.clock),
        }
        opened = (
            AsyncTokenManager(DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, **options)
            if runtime == "asyncio"
            else open_trio_token_manager(DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, **options)
        )
        async with opened as manager:
            token = await manager.get_token()
            assert await manager.get_token() is token
            _, _, since, until = manager._slot.memo
            assert since == wall() and until - since == pytest.approx(
                token.usable_until - token.fresh_until
            )
            wall.step(-1.0)
            assert await manager.get_token() is token
            assert manager._slot.memo[2] == wall()  # refused, then armed again
            wall.step(3600.0)
            assert await manager.get_token() is token
            assert manager._slot.memo[2] == wall()
        assert inproc.stat("token_requests") == 1

    asyncio.run(main()) if runtime == "asyncio" else trio.run(main)


def _advancing(clock: FakeClock) -> Callable[[float], Awaitable[None]]:
    async def sleep(seconds: float) -> None:
        clock.advance(seconds)

    return sleep


def test_a_manager_collected_unclosed_leaves_its_slot_without_its_lock(inproc: InProcess) -> None:
    """The finalizer of a manager never closed lets go of the slot even on a thread that holds
    the slot's lock (the garbage collector runs finalizers wherever it runs), and the slot is
    then free for a manager on another clock."""
    manager = inproc.manager()
    slot = manager._slot
    inproc.managers.remove(manager)
    finished = threading.Event()

    def collect_holding_the_lock() -> None:
        nonlocal manager
        with slot.lock:
            del manager
            gc.collect()
        finished.set()

    with pytest.warns(ResourceWarning, match="never closed"):
        worker = threading.Thread(target=collect_holding_the_lock, daemon=True)
        worker.start()
        assert finished.wait(10.0), "the finalizer waited for the slot's lock"
    other_clock = FakeClock()
    with inproc.manager(
        clock=other_clock, transport=SandboxTransport(inproc.sandbox, other_clock)
    ) as other:
        assert other._slot is slot
