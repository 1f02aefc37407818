"""The fleet protocol, deterministic: several processes' real machines over a simulated
store, with hypothesis choosing who asks, who steps, when time passes and when the store
fails. After every step: no expired token handed out, at most one request in flight per
process, at most one fleet-wide while the store is up, the fleet's windows kept."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

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
from eightyeightpay.tokens import Token
from tests.fleet_sim import SimProcess, SimStore

PROCESSES = 3
CREDENTIALS = Credentials(DEFAULT_API_KEY, DEFAULT_MERCHANT_ID)


class FleetRules(RuleBasedStateMachine):
    @initialize(seed=st.integers(0, 1000))
    def start(self, seed: int) -> None:
        self.clock = FakeClock()
        self.sandbox = Sandbox()
        self.transport = SandboxTransport(self.sandbox, self.clock)
        self.store = SimStore(self.clock)
        self.policy = Policy()
        self.processes = [
            SimProcess(f"p{i}", CREDENTIALS, self.policy, seed + i, self.clock)
            for i in range(PROCESSES)
        ]
        self.sends: list[tuple[float, bool]] = []  # (time, sent alone while the store failed)

    def _send(self, effect: SendTokenRequest) -> Exchange:
        sender = next(p for p in self.processes if p.effect is effect)
        self.sends.append((self.clock(), sender.machine.degraded))
        coordinated = [
            p
            for p in self.processes
            if isinstance(p.effect, SendTokenRequest) and not p.machine.degraded
        ]
        assert len(coordinated) <= 1, "two coordinated token requests in flight across the fleet"
        try:
            response = self.transport.send(effect.request, timeout=effect.timeout)
        except EightyEightPayError as error:
            return Exchange(None, error, self.clock())
        return Exchange(response, None, self.clock())

    @rule(which=st.integers(0, PROCESSES - 1))
    def caller_asks(self, which: int) -> None:
        outcome = self.processes[which].ask()
        if isinstance(outcome, Token):
            assert self.clock() < outcome.usable_until
            assert self.sandbox.stats()["tokens_issued"] >= 1

    @rule(which=st.integers(0, PROCESSES - 1))
    def process_steps(self, which: int) -> None:
        self.processes[which].step(self.store, self._send)

    @rule(seconds=st.sampled_from([0.01, 0.05, 0.5, 5.0, 30.0, 61.0]))
    def time_passes(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule()
    def store_fails_or_returns(self) -> None:
        self.store.down = not self.store.down

    @invariant()
    def windows_hold(self) -> None:
        if not hasattr(self, "sends"):
            return
        now = self.clock()
        healthy = [t for t, alone in self.sends if not alone]
        assert sum(1 for t in healthy if t > now - 60) <= self.policy.per_minute
        assert sum(1 for t in healthy if t > now - 3600) <= self.policy.per_hour
        assert self.sandbox.stats()["rate_limited"] == 0 or any(alone for _, alone in self.sends)

    @invariant()
    def one_flight_per_process(self) -> None:
        for process in getattr(self, "processes", []):
            assert (process.machine.flight is None) == (process.steps is None)


TestFleet = FleetRules.TestCase
TestFleet.settings = settings(max_examples=120, stateful_step_count=80, deadline=None)


def test_a_healthy_fleet_of_ten_shares_one_token_per_refresh() -> None:
    clock = FakeClock()
    sandbox = Sandbox()
    transport = SandboxTransport(sandbox, clock)
    store = SimStore(clock)
    fleet = [SimProcess(f"p{i}", CREDENTIALS, Policy(), i, clock) for i in range(10)]

    def send(effect: SendTokenRequest) -> Exchange:
        return Exchange(transport.send(effect.request, timeout=effect.timeout), None, clock())

    for _ in range(3600 * 20):  # an hour, every process asked 20 times a second
        clock.advance(0.05)
        for process in fleet:
            process.ask()
        for _ in range(3):
            for process in fleet:
                process.step(store, send)
    assert 60 <= sandbox.stats()["token_requests"] <= 74
    assert sandbox.stats()["rate_limited"] == 0
