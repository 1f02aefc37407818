"""OpenTelemetry spans and metrics, and stats(), over one flow on all three runtimes.

The flow: a first token through a fleet store, a 429 on the next refresh, a charge answered
401 and replayed with a new token, then a fleet store outage (the process refreshes alone,
degraded) and its end. The SDK's in-memory exporters collect everything, which is then
checked span by span and point by point, and swept for secrets.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from eightyeightpay import (
    ApiRateLimited,
    ConfigurationError,
    MemoryStore,
    Policy,
    RateLimited,
    Stats,
    Telemetry,
    Token,
    TokenManager,
    TransportError,
)
from eightyeightpay.adapters.telemetry import Observer, _redacted
from eightyeightpay.machine import FAILOVER_GRACE
from eightyeightpay.plugins.fleet import FleetStore
from eightyeightpay.plugins.sandbox import (
    DEFAULT_API_KEY,
    DEFAULT_MERCHANT_ID,
    FakeClock,
    Fault,
    Sandbox,
)
from tests.fleet_sim import SimStore
from tests.parity.harness import RUNTIMES, Harness, Scenario, run_scenario

CHARGES = "/api/transactions/charges"
BALANCE = f"/api/balance?id={DEFAULT_MERCHANT_ID}"
CHARGE = {"flow": "PAYIN", "method_code": "PSE", "amount": 10, "currency": "COP", "country": "COL"}
TOKEN_URL = "https://api-sandbox.88pay.io/api/auth/token"


class SimFleetStore(FleetStore):
    """A fleet store over the test suite's in-memory store, which can be taken down."""

    name = "sim"

    def __init__(self, clock: FakeClock) -> None:
        super().__init__()
        self.shared_state = SimStore(clock)

    def operations(self) -> SimStore:
        return self.shared_state

    def async_operations(self) -> _AsyncOps:
        return _AsyncOps(self.shared_state)


class _AsyncOps:
    def __init__(self, store: SimStore) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._store, name)

        async def call(*args: Any) -> Any:
            return method(*args)

        return call


class Collected:
    """The in-memory exporters and the telemetry feeding them."""

    def __init__(self, **options: Any) -> None:
        self.spans = InMemorySpanExporter()
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        self.telemetry = Telemetry(
            tracer_provider=tracer_provider,
            meter_provider=MeterProvider(metric_readers=[self.reader]),
            **options,
        )

    def finished(self) -> list[Any]:
        """The finished spans (ReadableSpan; typed Any so attributes index without checks)."""
        spans: tuple[ReadableSpan, ...] = self.spans.get_finished_spans()
        return list(spans)

    def points(self) -> dict[str, list[tuple[dict[str, Any], Any]]]:
        """Metric name -> [(attributes, data point)]."""
        data = self.reader.get_metrics_data()
        found: dict[str, list[tuple[dict[str, Any], Any]]] = {}
        assert data is not None
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                assert scope.scope.name == "eightyeightpay"
                for metric in scope.metrics:
                    for point in metric.data.data_points:
                        found.setdefault(metric.name, []).append(
                            (dict(point.attributes or {}), point)
                        )
        return found


def value_of(points: list[tuple[dict[str, Any], Any]], **wanted: Any) -> Any:
    """The one point whose attributes include ``wanted``: its value (or the histogram)."""
    chosen = [p for attributes, p in points if wanted.items() <= attributes.items()]
    assert len(chosen) == 1, (wanted, points)
    return getattr(chosen[0], "value", chosen[0])


def flow(
    collected: Collected, store: SimFleetStore, tokens: list[Token], out: dict[str, Any]
) -> Scenario:
    """The scenario run on each runtime; fills ``tokens`` and ``out`` for the checks."""

    async def scenario(h: Harness) -> None:
        tokens.append(await h.get_token())  # 1: a token through the fleet store
        h.sandbox.inject(Fault.status(429))
        h.clock.advance(61)  # the token has expired: the next call refreshes and gets a 429
        with pytest.raises(RateLimited):
            await h.get_token(deadline=0)  # fail fast: no retry after the cool-down
        out["after_429"] = h.manager.stats()
        h.clock.advance(61)  # past the cool-down
        h.sandbox.inject(Fault.status(401), path=CHARGES)
        charge = await h.request("POST", CHARGES, json=CHARGE)  # 401, new token, replayed
        assert charge.status == 200
        assert (await h.request("POST", BALANCE)).status == 200
        tokens.append(await h.get_token())
        store.shared_state.down = True
        h.clock.advance(61)
        tokens.append(await h.get_token())  # refreshed alone: the store is down
        out["degraded"] = h.manager.stats()
        h.clock.advance(5)
        out["degraded_later"] = h.manager.stats()
        store.shared_state.down = False
        h.clock.advance(61)
        tokens.append(await h.get_token())  # the store answers again
        out["end"] = h.manager.stats()
        out["fleet"] = h.manager.stats(fleet=True)
        out["sandbox"] = h.sandbox.stats()
        out["points"] = collected.points()  # observed while the manager is open

    return scenario


@pytest.fixture(params=RUNTIMES)
def observed(
    request: pytest.FixtureRequest,
) -> Iterator[tuple[Collected, list[Token], dict[str, Any]]]:
    collected = Collected()
    clock = FakeClock()
    store = SimFleetStore(clock)
    tokens: list[Token] = []
    out: dict[str, Any] = {}
    run_scenario(
        request.param,
        flow(collected, store, tokens, out),
        clock=clock,
        store=store,
        telemetry=collected.telemetry,
    )
    yield collected, tokens, out


def test_spans_follow_the_http_client_conventions(observed: Any) -> None:
    collected, _, _ = observed
    spans = collected.finished()
    token_sends = [s for s in spans if s.attributes.get("url.full") == TOKEN_URL]
    # The first token, the 429, the charge's token, the token after the 401, the token
    # fetched alone during the outage, and the token after it.
    assert [s.name for s in token_sends] == ["POST"] * 6
    statuses = [s.attributes.get("http.response.status_code") for s in token_sends]
    assert statuses == [200, 429, 200, 200, 200, 200]
    for span in token_sends:
        assert span.kind.name == "CLIENT"
        assert span.attributes["http.request.method"] == "POST"
        assert span.attributes["server.address"] == "api-sandbox.88pay.io"
        assert span.attributes["server.port"] == 443
        assert span.parent is not None  # under its refresh span
    limited = token_sends[1]
    assert limited.attributes["error.type"] == "429"
    assert limited.status.status_code.name == "ERROR"
    assert limited.attributes["eightyeightpay.outcome"] == "rate_limited"
    assert token_sends[2].attributes["eightyeightpay.retry_attempt"] == 1  # after the 429
    assert token_sends[2].attributes["http.request.resend_count"] == 1
    assert "http.request.resend_count" not in token_sends[0].attributes
    assert limited.status.description is None  # the status code says why
    assert "error.type" not in token_sends[0].attributes
    flights = [s.attributes["eightyeightpay.flight"] for s in token_sends]
    assert flights == sorted(flights) and len(set(flights)) == 6

    calls = [s for s in spans if s.attributes.get("url.full", "").endswith(CHARGES)]
    assert [s.attributes["http.response.status_code"] for s in calls] == [401, 200]
    assert [s.attributes["eightyeightpay.replayed_after_401"] for s in calls] == [False, True]
    assert calls[0].attributes["error.type"] == "401"
    assert calls[1].attributes["http.request.resend_count"] == 1
    assert "error.type" not in calls[1].attributes
    balance = [s for s in spans if "/api/balance" in s.attributes.get("url.full", "")]
    assert [s.attributes["url.full"] for s in balance] == [
        "https://api-sandbox.88pay.io/api/balance?id=REDACTED"
    ]

    refreshes = [s for s in spans if s.name == "eightyeightpay.token.refresh"]
    modes = [s.attributes["eightyeightpay.store.mode"] for s in refreshes]
    assert modes == ["healthy", "healthy", "healthy", "healthy", "degraded", "healthy"]
    assert refreshes[1].attributes["error.type"] == "rate_limited"

    store_spans = [s for s in spans if s.name.startswith("eightyeightpay.store.")]
    operations = {s.attributes["eightyeightpay.store.operation"] for s in store_spans}
    assert operations >= {"read", "acquire", "reserve", "write", "release", "cool_down"}
    faults = [s for s in store_spans if s.attributes.get("error.type") == "store_unavailable"]
    # The outage's first read and the reads of the failover grace (one every 0.1 s for 3 s,
    # counted: the fake clock does not move); the process then works alone.
    assert len(faults) == 1 + math.ceil(FAILOVER_GRACE / 0.1)
    assert all(s.attributes["eightyeightpay.store.name"] == "sim" for s in store_spans)
    assert all(s.parent is not None for s in store_spans)


def test_metrics_count_what_happened(observed: Any) -> None:
    _, _, out = observed
    points = out["points"]
    requests = points["eightyeightpay.token.requests"]
    assert value_of(requests, **{"eightyeightpay.outcome": "ok"}) == 5
    assert value_of(requests, **{"eightyeightpay.outcome": "rate_limited"}) == 1
    durations = points["eightyeightpay.token.request.duration"]
    assert value_of(durations, **{"eightyeightpay.outcome": "ok"}).count == 5
    assert value_of(durations, **{"eightyeightpay.outcome": "rate_limited"}).count == 1
    end: Stats = out["end"]
    assert value_of(points["eightyeightpay.token.waiters"]) == end.waited >= 4
    budget = points["eightyeightpay.token.budget.remaining"]
    assert value_of(budget, **{"eightyeightpay.window": "minute"}) == 10 - end.minute_spent
    # The fleet's budget, as the store counted it: the send made alone during the outage
    # was put back into it when the store answered again: the fleet has spent 6.
    assert value_of(budget, **{"eightyeightpay.window": "hour"}) == 100 - 6
    assert {a["eightyeightpay.budget.scope"] for a, _ in budget} == {"fleet"}
    modes = points["eightyeightpay.store.mode"]
    assert value_of(modes, **{"eightyeightpay.store.mode": "healthy"}) == 1
    assert value_of(modes, **{"eightyeightpay.store.mode": "degraded"}) == 0
    assert value_of(modes, **{"eightyeightpay.store.mode": "local"}) == 0
    for name, found in points.items():
        for attributes, _ in found:
            assert attributes["server.address"] == "api-sandbox.88pay.io", name
            assert "eightyeightpay.merchant_id" not in attributes


def test_stats_tell_the_flow(observed: Any) -> None:
    _, _, out = observed
    after_429: Stats = out["after_429"]
    assert after_429.rate_limited == 1 and after_429.failures_in_row == 1
    assert after_429.outcome("rate_limited") == 1 and after_429.outcome("ok") == 1
    assert after_429.token_remaining == 0.0 and after_429.next_request_in > 0
    degraded, later = out["degraded"], out["degraded_later"]
    assert degraded.store_mode == "degraded" and degraded.degraded_for == 0.0
    assert later.degraded_for == 5.0 and later.degraded_since == degraded.degraded_since
    end: Stats = out["end"]
    assert end.store_mode == "healthy" and end.degraded_since is None
    assert end.failures_in_row == 0 and end.rejected_tokens == 1
    sandbox = out["sandbox"]
    assert end.token_requests == sandbox["token_requests"] == 6
    assert end.outcome("ok") == sandbox["tokens_issued"] == 5
    assert end.hour_spent == 6 and end.minute_spent == 1
    assert end.token_remaining is not None and 0 < end.token_remaining <= 50
    fleet: Stats = out["fleet"]
    assert end.budget_scope == "process" and end.fleet_hour_spent is None
    assert (fleet.fleet_minute_spent, fleet.fleet_hour_spent, fleet.budget_scope) == (
        1,
        6,
        "fleet",
    )  # the outage's send, put back
    assert fleet.hour_remaining == 94 and fleet.hour_spent == 6


def test_nothing_secret_is_exported(observed: Any) -> None:
    collected, tokens, _ = observed
    secrets = {DEFAULT_API_KEY, DEFAULT_MERCHANT_ID}
    for token in tokens:
        secrets |= {token.access_token, token.session_id, *token.access_token.split(".")}
    exported: list[Any] = []
    for span in collected.finished():
        exported += [span.name, dict(span.attributes), span.status.description]
        exported += [[event.name, dict(event.attributes)] for event in span.events]
        exported += [dict(link.attributes) for link in span.links]
    for name, found in (collected.points() | observed[2]["points"]).items():
        exported += [name, [attributes for attributes, _ in found]]
    text = json.dumps(exported, default=str)
    assert "eightyeightpay.token.refresh" in text and "POST" in text  # it is all there
    leaked = [secret for secret in secrets if secret in text]
    assert leaked == []


def test_merchant_label_only_when_allowed() -> None:
    collected = Collected(merchant_label=True)

    points: dict[str, Any] = {}

    async def scenario(h: Harness) -> None:
        await h.get_token()
        points.update(collected.points())

    run_scenario("sync", scenario, telemetry=collected.telemetry, sandbox=Sandbox())
    assert len(points) == 5
    for found in points.values():
        for attributes, _ in found:
            assert attributes["eightyeightpay.merchant_id"] == DEFAULT_MERCHANT_ID


def test_without_telemetry_nothing_is_observed() -> None:
    async def scenario(h: Harness) -> None:
        await h.get_token()
        assert h.manager._observer is None
        assert h.manager.stats().token_requests == 1

    run_scenario("sync", scenario)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_the_cached_path_touches_no_telemetry(
    runtime: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A warm get_token() neither spans, records nor calls the observer (benchmarks time it)."""
    collected = Collected()
    calls: list[str] = []
    for name in ("flight", "api_call", "span", "close"):
        original = getattr(Observer, name)

        def spy(self: Observer, *args: Any, _name: str = name, _original: Any = original) -> Any:
            calls.append(_name)
            return _original(self, *args)

        monkeypatch.setattr(Observer, name, spy)

    async def scenario(h: Harness) -> None:
        first = await h.get_token()
        assert calls and collected.finished()  # the refresh was observed
        calls.clear()
        spans = len(collected.finished())
        for _ in range(1000):
            assert await h.get_token() is first
        assert calls == [] and len(collected.finished()) == spans

    run_scenario(runtime, scenario, telemetry=collected.telemetry)


def test_a_fleet_lock_wait_has_its_span() -> None:
    """Another process holds the fleet lock: the wait is a span, and the send carries it."""
    collected = Collected()
    clock = FakeClock()
    store = SimFleetStore(clock)
    store.shared_state.lock = ("another process", clock() + 30)

    def sleep(seconds: float) -> None:  # the other process finishes while this one sleeps
        clock.advance(seconds)
        store.shared_state.lock = None

    async def scenario(h: Harness) -> None:
        await h.get_token()

    run_scenario(
        "sync", scenario, clock=clock, store=store, sleep=sleep, telemetry=collected.telemetry
    )
    spans = collected.finished()
    (wait,) = [s for s in spans if s.name == "eightyeightpay.fleet_lock.wait"]
    assert wait.attributes["eightyeightpay.fleet_lock.acquired"] is True
    assert wait.attributes["eightyeightpay.fleet_lock_waited"] == pytest.approx(0.05)
    (send,) = [s for s in spans if s.name == "POST"]
    assert send.attributes["eightyeightpay.fleet_lock_waited"] == pytest.approx(0.05)
    (refresh,) = [s for s in spans if s.name == "eightyeightpay.token.refresh"]
    assert wait.parent is not None and wait.parent.span_id == refresh.context.span_id
    acquires = [s for s in spans if s.name == "eightyeightpay.store.acquire"]
    assert len(acquires) == 2


def test_without_the_api_installed_telemetry_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry", None)  # as if not installed
    with pytest.raises(ConfigurationError, match=r"pip install 'eightyeightpay\[otel\]'"):
        Telemetry()


def test_a_broken_transport_plugin_ends_the_span_and_is_counted() -> None:
    collected = Collected()

    class Broken:
        def send(self, request: Any, *, timeout: float) -> Any:
            raise RuntimeError("a bug in a third-party transport")

        def close(self) -> None:
            pass

    with TokenManager(
        DEFAULT_API_KEY,
        DEFAULT_MERCHANT_ID,
        transport=Broken(),
        store=MemoryStore(),
        telemetry=collected.telemetry,
    ) as manager:
        with pytest.raises(TransportError):
            manager.get_token(deadline=0)  # one attempt (a default deadline would retry it)
        stats = manager.stats()
        points = collected.points()
    (send,) = [s for s in collected.finished() if s.name == "POST"]
    assert send.attributes["error.type"] == "TransportError"
    assert send.attributes["eightyeightpay.outcome"] == "transport_error"
    assert stats.outcome("transport_error") == stats.token_requests == 1
    requests = points["eightyeightpay.token.requests"]
    assert value_of(requests, **{"eightyeightpay.outcome": "transport_error"}) == 1


def test_url_full_keeps_no_credentials_and_no_query_value() -> None:
    assert _redacted("https://u:p@h.io:8443/api/balance?id=MCH-X&x=1") == (
        "https://REDACTED:REDACTED@h.io:8443/api/balance?id=REDACTED&x=REDACTED"
    )
    assert _redacted("https://h.io/api/auth/token") == "https://h.io/api/auth/token"


# --------------------------------------------------------------------------- the API governor


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("fleet", [False, True], ids=["memory", "fleet"])
def test_a_call_held_back_by_the_api_governor_shows_it_in_its_spans(
    runtime: str, fleet: bool
) -> None:
    """An API 429 (Retry-After: 5): a fail-fast call in its cool-down is refused, and the
    governor's span says why (cause, scope) and fails; a call with a deadline waits the
    cool-down out, and both its governor span and its send's span carry the wait."""
    collected = Collected()
    clock = FakeClock()
    store: FleetStore | MemoryStore = SimFleetStore(clock) if fleet else MemoryStore()

    async def scenario(h: Harness) -> None:
        assert (await h.request("POST", BALANCE)).status == 200
        h.sandbox.inject(Fault.status(429, headers={"Retry-After": "5"}), path="/api/balance")
        with pytest.raises(ApiRateLimited) as answered:
            await h.request("POST", BALANCE, deadline=0)
        assert not answered.value.local
        h.clock.advance(1.0)
        with pytest.raises(ApiRateLimited) as refused:
            await h.request("POST", BALANCE, deadline=0)
        assert refused.value.local and refused.value.retry_after == pytest.approx(4.0)
        assert (await h.request("POST", BALANCE, deadline=10)).status == 200

    run_scenario(runtime, scenario, clock=clock, store=store, telemetry=collected.telemetry)
    spans = collected.finished()
    sends = [s for s in spans if s.name == "POST" and "/api/balance" in s.attributes["url.full"]]
    assert [s.attributes["http.response.status_code"] for s in sends] == [200, 429, 200]
    waits = [s.attributes["eightyeightpay.api_governor_waited"] for s in sends]
    assert waits == pytest.approx([0, 0, 4.0])
    holds = [s for s in spans if s.name == "eightyeightpay.api_governor.wait"]
    assert len(holds) == 2
    scope = "fleet" if fleet else "process"
    for hold in holds:
        assert hold.kind.name == "INTERNAL"
        assert hold.attributes["url.full"].endswith("/api/balance?id=REDACTED")
        assert hold.attributes["eightyeightpay.api_governor.cause"] == "cool_down"
        assert hold.attributes["eightyeightpay.budget.scope"] == scope
        (event,) = hold.events
        assert event.name == "eightyeightpay.api_governor.held"
        assert event.attributes["eightyeightpay.api_governor.wait"] == pytest.approx(4.0)
        assert event.attributes["eightyeightpay.api_governor.cause"] == "cool_down"
    refused_hold, waited_hold = holds
    assert refused_hold.attributes["eightyeightpay.api_governor.reserved"] is False
    assert refused_hold.attributes["error.type"] == "ApiRateLimited"
    assert refused_hold.status.status_code.name == "ERROR"
    assert refused_hold.attributes["eightyeightpay.api_governor_waited"] == 0
    assert waited_hold.attributes["eightyeightpay.api_governor.reserved"] is True
    assert waited_hold.attributes["eightyeightpay.api_governor_waited"] == pytest.approx(4.0)
    assert "error.type" not in waited_hold.attributes
    exported = json.dumps([json.loads(s.to_json()) for s in spans])
    assert DEFAULT_API_KEY not in exported and DEFAULT_MERCHANT_ID not in exported


def test_a_call_held_back_by_the_api_limit_says_so() -> None:
    """Over the policy's API calls per minute: the cause is the limit, not a cool-down."""
    collected = Collected()

    async def scenario(h: Harness) -> None:
        assert (await h.request("POST", BALANCE)).status == 200
        assert (await h.request("POST", BALANCE, deadline=70)).status == 200  # waits a minute

    run_scenario(
        "sync",
        scenario,
        policy=Policy(api_per_minute=1),
        store=MemoryStore(),
        telemetry=collected.telemetry,
    )
    (hold,) = [s for s in collected.finished() if s.name == "eightyeightpay.api_governor.wait"]
    assert hold.attributes["eightyeightpay.api_governor.cause"] == "limit"
    assert hold.attributes["eightyeightpay.budget.scope"] == "process"
    assert hold.attributes["eightyeightpay.api_governor_waited"] == pytest.approx(60.0)
