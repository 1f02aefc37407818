"""The real core over a simulated shared store (tests/fleet_sim.py): big fleets, one hour.

Each instance is a real :class:`~eightyeightpay.machine.TokenMachine` with ``fleet=True``;
each gets one caller every ``period`` simulated seconds (random phase); simulated time
moves in 50 ms ticks. Store operations and the token request are instantaneous in
simulated time, so a caller's wait is the protocol's own: lock polling and sleeps.
"""

from __future__ import annotations

import json
import random
import time
from collections import defaultdict

from eightyeightpay.credentials import Credentials
from eightyeightpay.errors import EightyEightPayError
from eightyeightpay.machine import Exchange, SendTokenRequest
from eightyeightpay.plugins.sandbox import (
    DEFAULT_API_KEY,
    DEFAULT_MERCHANT_ID,
    FakeClock,
    Sandbox,
    SandboxTransport,
)
from eightyeightpay.policy import Policy
from tests.fleet_sim import SimProcess, SimStore

from .common import Figures

TICK = 0.05
HOUR = 3600.0


def simulate(instances: int, period: float, seed: int = 0) -> Figures:
    """One simulated hour of ``instances`` processes sharing one simulated store."""
    clock, sandbox = FakeClock(), Sandbox()
    transport = SandboxTransport(sandbox, clock)
    store = SimStore(clock)
    credentials = Credentials(DEFAULT_API_KEY, DEFAULT_MERCHANT_ID)
    policy = Policy()
    fleet = [SimProcess(f"p{i}", credentials, policy, seed + i, clock) for i in range(instances)]
    period_ticks = max(1, round(period / TICK))
    rng = random.Random(seed)
    buckets: dict[int, list[SimProcess]] = defaultdict(list)
    for process in fleet:
        buckets[rng.randrange(period_ticks)].append(process)
    waiting: dict[int, list[float]] = defaultdict(list)  # id(process) -> ask times
    active: set[SimProcess] = set()
    worst_wait = 0.0
    calls = failed = waited = 0

    def send(effect: SendTokenRequest) -> Exchange:
        try:
            response = transport.send(effect.request, timeout=effect.timeout)
        except EightyEightPayError as error:
            return Exchange(None, error, clock())
        return Exchange(response, None, clock())

    started = time.perf_counter()
    for tick in range(int(HOUR / TICK)):
        clock.advance(TICK)
        now = clock()
        for process in buckets.get(tick % period_ticks, ()):
            calls += 1
            outcome = process.ask()
            if outcome is None:
                waited += 1
                waiting[id(process)].append(now)
            elif isinstance(outcome, EightyEightPayError):
                failed += 1
            if process.effect is not None:
                active.add(process)
        for process in list(active):
            for _ in range(8):  # a few effects per tick: store round trips are fast
                settled = process.step(store, send)
                if settled is not None:
                    asks = waiting.pop(id(process), [])
                    if asks:
                        worst_wait = max(worst_wait, clock() - min(asks))
                    if settled.error is not None:
                        failed += len(asks)
                if process.effect is None or process.sleeping:
                    break
            if process.effect is None:
                active.discard(process)
    stats = sandbox.stats()
    return {
        "instances": instances,
        "seconds_between_calls_per_instance": period,
        "calls": calls,
        "token_requests": stats["token_requests"],
        "rate_limited_429": stats["rate_limited"],
        "store_operations": store.operations,
        "store_operations_per_second": round(store.operations / HOUR, 1),
        "callers_that_waited": waited,
        "calls_failed": failed,
        "worst_wait_seconds": round(worst_wait, 3),
        "wall_seconds": round(time.perf_counter() - started, 1),
    }


def run(quick: bool) -> Figures:
    """One instance at steady load, then 1,000 and 10,000 instances, over a simulated hour."""
    period = 20.0 if quick else 5.0
    figures: Figures = {"1 (steady, a call every 50 ms)": simulate(1, TICK)}
    for instances in (1_000, 10_000):
        figures[str(instances)] = simulate(instances, period)
    return figures


if __name__ == "__main__":
    print(json.dumps(run(True), indent=1))
