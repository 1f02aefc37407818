"""A simulated shared store and fleet, driving the real core without sockets or threads.

Used by the deterministic fleet tests (and the fleet simulation benchmark): every process
is a real :class:`TokenMachine` with ``fleet=True``; the store is a dict with its own clock.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Generator
from typing import Any

from eightyeightpay.credentials import CacheKey, Credentials
from eightyeightpay.errors import EightyEightPayError
from eightyeightpay.fleet import (
    BudgetRequest,
    Done,
    FleetEffect,
    Purpose,
    Sleep,
    StoreBudget,
    StoredToken,
    StoreFault,
    store_call,
    store_result,
)
from eightyeightpay.governor import RateWindow
from eightyeightpay.machine import (
    Effect,
    Exchange,
    Pause,
    Refresh,
    Result,
    SendTokenRequest,
    Serve,
    ServeAndRefresh,
    Settled,
    TokenMachine,
    Unavailable,
    Wait,
)
from eightyeightpay.policy import Deadline, Policy, call_deadline
from eightyeightpay.tokens import Token


class StoreDown(Exception):
    """The simulated store is unreachable."""


class SimStore:
    """What Redis keeps, in a dict, timed by ``clock`` (the store's own clock)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.down = False
        self.token: tuple[StoredToken, float] | None = None
        self.lock: tuple[str, float] | None = None
        self.budgets: dict[str, StoreBudget] = {}
        self.epochs = 0  # epochs named so far (the next one's name)
        self.cooldowns: dict[CacheKey, float] = {}  # per key: the token's, the API calls'
        self.operations = 0
        self.members: dict[str, float] = {}
        self._expiries: list[tuple[float, str]] = []  # (until, member), pruned lazily
        self.stalls = False  # while down: calls time out (True) rather than fail fast
        self.misconfigured = False  # while down: calls are refused for a configuration mistake

    def _touch(self) -> float:
        if self.down:
            raise StoreDown("store unreachable")
        self.operations += 1
        return self.clock()

    def read(self, key: CacheKey) -> tuple[StoredToken | None, float, float]:
        now = self._touch()
        token, ttl = None, 0.0
        if self.token is not None and self.token[1] > now:
            token, ttl = self.token[0], self.token[1] - now
        return token, ttl, max(0.0, self.cooldowns.get(key, 0.0) - now)

    def extend(self, key: CacheKey, owner: str, ttl: float) -> bool:
        now = self._touch()
        if self.lock is None or self.lock[0] != owner or self.lock[1] <= now:
            return False
        self.lock = (owner, now + ttl)
        return True

    def acquire(self, key: CacheKey, owner: str, ttl: float) -> bool:
        now = self._touch()
        if self.lock is not None and self.lock[1] > now:
            return False
        self.lock = (owner, now + ttl)
        return True

    def reserve(self, key: CacheKey, request: BudgetRequest) -> tuple[float, str]:
        now = self._touch()
        before = self.budgets.get(request.purpose, StoreBudget())
        self.epochs += not before.epoch
        after, wait = before.reserve(request, now, f"epoch-{self.epochs}")
        self.budgets[request.purpose] = after
        return wait, after.epoch

    def restart(self) -> None:
        """Start again empty, as a Redis without persistence does after a restart."""
        self.token, self.lock, self.cooldowns = None, None, {}
        self.budgets, self.members, self._expiries = {}, {}, []

    @property
    def window(self) -> RateWindow:
        """The fleet's token budget's send times."""
        return self.budgets.get("token", StoreBudget()).sends

    def join(self, key: CacheKey, member: str, ttl: float) -> int:
        now = self._touch()
        # A heap of expiries: rebuilding the membership on every join made 10,000
        # simulated instances quadratic.
        expiries = self._expiries
        while expiries and expiries[0][0] <= now:
            until, gone = heapq.heappop(expiries)
            if self.members.get(gone) == until:
                del self.members[gone]
        self.members[member] = now + ttl
        heapq.heappush(expiries, (now + ttl, member))
        return len(self.members)

    def spent(
        self, key: CacheKey, purpose: Purpose, minute_span: float, hour_span: float
    ) -> tuple[int, int]:
        now = self._touch()
        return self.budgets.get(purpose, StoreBudget()).spent(now, minute_span, hour_span)

    def write(self, key: CacheKey, token: StoredToken, ttl: float) -> None:
        now = self._touch()
        self.token = (token, now + ttl)

    def cool_down(self, key: CacheKey, seconds: float) -> None:
        now = self._touch()
        self.cooldowns[key] = max(self.cooldowns.get(key, 0.0), now + seconds)

    def release(self, key: CacheKey, owner: str) -> None:
        self._touch()
        if self.lock is not None and self.lock[0] == owner:
            self.lock = None


class SimProcess:
    """One process of the fleet: a fleet machine and the flight it is stepping, if any."""

    def __init__(
        self,
        name: str,
        credentials: Credentials,
        policy: Policy,
        seed: int,
        clock: Callable[[], float],
    ) -> None:
        self.machine = TokenMachine(
            credentials, policy, random.Random(seed), fleet=True, instance=name
        )
        self.clock = clock
        self.steps: Generator[Effect, Result, Settled] | None = None
        self.effect: Effect | None = None
        self.resume_at = 0.0
        self.sleeping = False
        self.served = 0
        self.waited = 0
        self.settled: dict[int, Settled] = {}  # how each flight ended, by number

    def ask(self) -> Token | EightyEightPayError | None:
        """A caller asks: the decision's outcome (None: it must wait for the flight)."""
        decision = self.machine.decide_and_start(self.clock())
        if isinstance(decision, Refresh | ServeAndRefresh):
            self.steps = self.machine.refresh(decision.flight)
            self.effect = next(self.steps)
        if isinstance(decision, Serve | ServeAndRefresh):
            self.served += 1
            return decision.token
        if isinstance(decision, Unavailable):
            return decision.error
        self.waited += isinstance(decision, Refresh | Wait)
        return None

    def step(self, store: SimStore, send: Callable[[SendTokenRequest], Exchange]) -> Any:
        """Perform the pending effect (if due) and feed its result to the core."""
        effect = self.effect
        if effect is None or self.steps is None or self.clock() < self.resume_at:
            return None
        result: Result
        if isinstance(effect, SendTokenRequest):
            result = send(effect)
        elif isinstance(effect, Sleep):
            if not self.sleeping:  # start sleeping; the next due step ends the sleep
                self.sleeping = True
                self.resume_at = self.clock() + effect.seconds
                return None
            self.sleeping = False
            result = Done(self.clock())
        else:
            result = perform(store, effect, self.clock)
        try:
            self.effect = self.steps.send(result)
        except StopIteration as stop:
            self.steps, self.effect = None, None
            self.settled[stop.value.flight.number] = stop.value
            return stop.value
        return None


class SimCaller:
    """One caller of ``process`` that calls ``get_token()`` with the policy's deadline again
    and again, ``every`` seconds apart, as a manager's driver runs it: it pauses, waits for
    flights, retries within its deadline and fails with the error the driver would raise."""

    def __init__(self, process: SimProcess, every: float = 0.02) -> None:
        self.process = process
        self.every = every
        self.next_at = 0.0
        self.until: Deadline | None = None  # the deadline of the call under way
        self.resume_at: float | None = None  # pausing until then
        self.waiting: Refresh | Wait | None = None  # waiting for this flight
        self.failed: list[tuple[float, EightyEightPayError]] = []  # (when, error)
        self.served = 0

    def tick(self) -> None:
        """Go on with the call under way, or start the next one when it is time."""
        machine, now = self.process.machine, self.process.clock()
        if self.until is None:
            if now < self.next_at:
                return
            self.until = call_deadline(machine.policy, now, None)
        if self.resume_at is not None:
            if now < self.resume_at:
                return
            self.resume_at = None
        if self.waiting is not None:
            settled = self.process.settled.get(self.waiting.flight.number)
            if settled is None:
                if now >= self.waiting.until:
                    self._end(now, machine.gave_up(self.waiting))
                return
            self.waiting = None
            if settled.error is not None:
                if not machine.may_retry(settled.error, now, self.until):
                    self._end(now, settled.error)
                    return
            elif settled.token is not None and now < settled.token.usable_until:
                self._end(now, None)
                return
        self._decide(now, self.until)

    def _decide(self, now: float, until: Deadline) -> None:
        decision = self.process.machine.decide_and_start(now, until)
        if isinstance(decision, Refresh | ServeAndRefresh):
            self.process.steps = self.process.machine.refresh(decision.flight)
            self.process.effect = next(self.process.steps)
        if isinstance(decision, Serve | ServeAndRefresh):
            self._end(now, None)
        elif isinstance(decision, Unavailable):
            self._end(now, decision.error)
        elif isinstance(decision, Pause):
            self.resume_at = decision.until
        else:
            self.waiting = decision

    def _end(self, now: float, error: EightyEightPayError | None) -> None:
        self.until, self.next_at = None, now + self.every
        if error is None:
            self.served += 1
        else:
            self.failed.append((now, error))


def perform(store: SimStore, effect: FleetEffect, clock: Callable[[], float]) -> Result:
    name, args = store_call(effect)
    try:
        value = getattr(store, name)(*args)
    except StoreDown:
        return StoreFault(
            "StoreDown", clock(), stalled=store.stalls, misconfigured=store.misconfigured
        )
    return store_result(effect, value, clock())
