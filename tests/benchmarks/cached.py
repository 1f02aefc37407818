"""Cached path: ``get_token()`` on a warm cache against the alternatives' cached checks."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from eightyeightpay.adapters.async_manager import AsyncTokenManager, open_trio_token_manager
from eightyeightpay.adapters.sync import TokenManager
from eightyeightpay.adapters.telemetry import Telemetry
from eightyeightpay.credentials import SANDBOX_URL
from eightyeightpay.plugins.memory import MemoryStore
from eightyeightpay.plugins.sandbox import (
    DEFAULT_API_KEY,
    DEFAULT_MERCHANT_ID,
    FakeClock,
    Sandbox,
    SandboxTransport,
)
from eightyeightpay.plugins.sandbox.async_transport import AsyncSandboxTransport

from .baseline import (
    AsyncReferenceCache,
    ReferenceCache,
    botocore_credentials,
    google_credentials,
    sandbox_fetcher,
)
from .common import Figures, ainterleaved, interleaved, loop_timer, ratio

# An hour-long token: the cached path is the same code, and no refresh falls inside a run.
LIFETIME = 3600
OBSERVED = "eightyeightpay, telemetry on"
"""The same manager with OpenTelemetry on (an SDK with in-memory exporters behind it)."""


def telemetry() -> Telemetry:
    """Telemetry feeding the SDK, as a user turns it on."""
    tracing = TracerProvider()
    tracing.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
    return Telemetry(
        tracer_provider=tracing,
        meter_provider=MeterProvider(metric_readers=[InMemoryMetricReader()]),
    )


def threaded(rounds: int, calls: int) -> Figures:
    """Calls per second on one thread: ours, the reference check, botocore, google-auth."""
    sandbox = Sandbox(token_lifetime=LIFETIME)
    transport = SandboxTransport(sandbox)
    fetch = sandbox_fetcher(transport, SANDBOX_URL)
    reference = ReferenceCache(fetch)
    reference.get()
    boto = botocore_credentials(fetch)
    google = google_credentials(fetch)
    google.refresh(None)
    url = SANDBOX_URL + "/api/balance"

    def google_before_request() -> None:
        google.before_request(None, "POST", url, {})

    def google_valid() -> str:
        if not google.valid:
            google.refresh(None)
        return str(google.token)

    with (
        TokenManager(
            DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, transport=transport, store=MemoryStore()
        ) as manager,
        TokenManager(
            DEFAULT_API_KEY,
            DEFAULT_MERCHANT_ID,
            transport=transport,
            store=MemoryStore(),
            telemetry=telemetry(),
        ) as observed,
    ):
        manager.get_token()
        observed.get_token()
        per_call = interleaved(
            {
                "eightyeightpay": loop_timer(manager.get_token, calls),
                OBSERVED: loop_timer(observed.get_token, calls),
                "reference check": loop_timer(reference.get, calls),
                "botocore get_frozen_credentials": loop_timer(boto.get_frozen_credentials, calls),
                "google-auth valid+token": loop_timer(google_valid, calls),
                "google-auth before_request": loop_timer(google_before_request, calls),
            },
            rounds,
        )
    return _figures(per_call, "reference check")


def _figures(per_call: dict[str, float], yardstick: str) -> Figures:
    ours = per_call["eightyeightpay"]
    return {
        name: {
            "ns_per_call": round(seconds * 1e9, 1),
            "calls_per_second": round(1 / seconds),
            "ours_vs_this": ratio(ours, seconds),
            "vs_yardstick": ratio(seconds, per_call[yardstick]),
        }
        for name, seconds in per_call.items()
    } | {"yardstick": yardstick}


def _async_batch(call: Callable[[], Awaitable[object]], calls: int) -> Callable[[], Any]:
    async def batch() -> float:
        started = time.perf_counter()
        for _ in range(calls):
            await call()
        return (time.perf_counter() - started) / calls

    return batch


async def _async_contenders(manager: Any, observed: Any, rounds: int, calls: int) -> Figures:
    cached_value = await manager.get_token()
    await observed.get_token()

    async def cached() -> object:
        return cached_value

    reference = AsyncReferenceCache(_never)
    reference.data, reference.expires_at = {"access_token": "x"}, time.time() + LIFETIME
    per_call = await ainterleaved(
        {
            "eightyeightpay": _async_batch(manager.get_token, calls),
            OBSERVED: _async_batch(observed.get_token, calls),
            "await cached coroutine": _async_batch(cached, calls),
            "reference check (async)": _async_batch(reference.get, calls),
        },
        rounds,
    )
    return _figures(per_call, "await cached coroutine")


async def _never() -> dict[str, Any]:
    raise AssertionError("the warm reference cache must not fetch")


def on_runtime(runtime: str, rounds: int, calls: int) -> Figures:
    """Calls per second of ``await get_token()`` on asyncio or trio against an awaited cached
    value."""
    sandbox = Sandbox(token_lifetime=LIFETIME)
    transport = AsyncSandboxTransport(sandbox, FakeClock())

    def manager(**extra: Any) -> Any:
        options: dict[str, Any] = {"transport": transport, "store": MemoryStore(), **extra}
        if runtime == "asyncio":
            return AsyncTokenManager(DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, **options)
        return open_trio_token_manager(DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, **options)

    async def main() -> Figures:
        async with manager() as opened, manager(telemetry=telemetry()) as observed:
            return await _async_contenders(opened, observed, rounds, calls)

    return asyncio.run(main()) if runtime == "asyncio" else trio.run(main)


def run(quick: bool) -> Figures:
    """Every runtime's cached-path figures."""
    rounds, calls = (5, 20_000) if quick else (15, 50_000)
    return {
        "threads": threaded(rounds, calls),
        "asyncio": on_runtime("asyncio", rounds, calls),
        "trio": on_runtime("trio", rounds, calls),
    }


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(run(quick="--quick" in sys.argv), indent=1))
