"""The API-call protocol alone: asyncio ``request()`` on a transport that answers at once.

    python -m tests.benchmarks.protocol

The manager gets its token from the emulator (its own process, :mod:`.serve`); then its
transport is swapped for one that returns a prepared 200 answer without any I/O, so what
is left is ``request()``'s own work: the governor's reservation, the token from the cache,
the deadline, building the request, reading the envelope. Figures: microseconds per call
(the fastest of 7 rounds of 20,000 calls: a hot loop, every cache warm, so the floor of
what the protocol costs; between real sends it costs more, see ``docs/performance.md``)
and Python bytecodes executed per call (``sys.settrace`` opcode events over 1,000 calls;
exact, and the same on any machine for one version of the code and of CPython).

Then the same work between real sends: ``request()`` and its transport alone (sending a
request built once, the body parsed) against the emulator, 10 interleaved rounds of 300
calls each, the median client CPU per call of each; their difference is what the protocol
costs where it runs, with the event loop, TLS and h11 in between.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from collections import Counter
from types import FrameType
from typing import Any

from eightyeightpay import AsyncTokenManager
from eightyeightpay.http import HttpRequest, HttpResponse
from eightyeightpay.plugins.sandbox import DEFAULT_API_KEY, DEFAULT_MERCHANT_ID

from .common import Figures, rotations
from .overhead import PATH, transport_alone, ungoverned
from .serve import emulator_process

BODY = json.dumps(
    {"status": "Success", "code": 200, "message": "OK", "data": {"balance": 1250.5}}
).encode()
ANSWER = HttpResponse(
    200, (("content-type", "application/json"), ("content-length", str(len(BODY)))), BODY
)


class AtOnce:
    """An async transport that answers every request with :data:`ANSWER`, with no I/O."""

    async def send(self, request: HttpRequest, *, timeout: float) -> HttpResponse:
        """:data:`ANSWER`."""
        return ANSWER

    async def aclose(self) -> None:
        """Nothing to close."""


def _bytecodes(counts: Counter[str]) -> Any:
    def tracer(frame: FrameType, event: str, arg: object) -> Any:
        frame.f_trace_opcodes = True
        code = frame.f_code
        key = f"{code.co_filename.rsplit('/', 1)[-1]}:{code.co_name}"

        def local(frame: FrameType, event: str, arg: object) -> Any:
            if event == "opcode":
                counts[key] += 1
            return local

        return local

    return tracer


async def _measure(emulator: dict[str, Any], rounds: int, calls: int) -> Figures:
    options = ungoverned(emulator["url"])
    manager = AsyncTokenManager(
        DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, ca_bundle=emulator["ca_file"], **options
    )
    await manager.request("POST", PATH)  # the token, from the emulator
    real, manager._transport = manager._transport, AtOnce()
    try:
        for _ in range(1_000):
            await manager.request("POST", PATH)
        samples = []
        for _ in range(rounds):
            started = time.perf_counter()
            for _ in range(calls):
                await manager.request("POST", PATH)
            samples.append((time.perf_counter() - started) / calls)
        counts: Counter[str] = Counter()
        traced = 1_000
        sys.settrace(_bytecodes(counts))
        try:
            for _ in range(traced):
                await manager.request("POST", PATH)
        finally:
            sys.settrace(None)
    finally:
        manager._transport = real
    try:
        in_place = await _in_place(manager)
    finally:
        await manager.aclose()
    return {
        "in_place_client_cpu_us_per_call": in_place,
        "us_per_call": min(samples) * 1e6,
        "bytecodes_per_call": sum(counts.values()) / traced,
        "rounds": rounds,
        "calls_per_round": calls,
        "busiest": {name: count / traced for name, count in counts.most_common(12)},
    }


async def _in_place(manager: AsyncTokenManager) -> Figures:
    alone = await transport_alone(manager)

    async def ours() -> object:
        return (await manager.request("POST", PATH)).json

    contenders = {"request()": ours, "its transport alone": alone}
    for call in contenders.values():
        for _ in range(200):
            await call()
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    for order in rotations(list(contenders), 10):
        for name in order:
            started = time.process_time()
            for _ in range(300):
                await contenders[name]()
            samples[name].append((time.process_time() - started) / 300 * 1e6)
    figures: Figures = {name: statistics.median(values) for name, values in samples.items()}
    figures["difference"] = figures["request()"] - figures["its transport alone"]
    return figures


def run(quick: bool = False) -> Figures:
    """The protocol's microseconds and bytecodes per asyncio ``request()``."""
    rounds, calls = (3, 5_000) if quick else (7, 20_000)
    with emulator_process() as emulator:
        return asyncio.run(_measure(emulator, rounds, calls))


if __name__ == "__main__":
    print(json.dumps(run("--quick" in sys.argv), indent=2))
