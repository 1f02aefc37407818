"""Timing helpers shared by the benchmarks: interleaved rounds, medians, ratios."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

Figures = dict[str, Any]


def rotations(names: Sequence[str], rounds: int) -> Iterator[list[str]]:
    """The order of each of ``rounds`` rounds: every name once, starting one further along
    each round, so that no contender always runs first (warm caches, CPU frequency)."""
    for round_number in range(rounds):
        shift = round_number % len(names)
        yield [*names[shift:], *names[:shift]]


def interleaved(
    contenders: dict[str, Callable[[], float]], rounds: int, *, budget: float = 60.0
) -> dict[str, float]:
    """Median of each contender's samples, running every contender once per round.

    Each callable measures one batch and returns seconds per operation. The order rotates
    every round (:func:`rotations`); the whole comparison stops early once ``budget`` seconds have passed (at least 3 rounds).
    """
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    started = time.perf_counter()
    for round_number, order in enumerate(rotations(list(contenders), rounds)):
        for name in order:
            samples[name].append(contenders[name]())
        if round_number >= 2 and time.perf_counter() - started > budget:
            break
    return {name: statistics.median(values) for name, values in samples.items()}


def loop_timer(call: Callable[[], object], calls: int) -> Callable[[], float]:
    """A batch of ``calls`` calls of ``call``; returns seconds per call."""

    def batch() -> float:
        started = time.perf_counter()
        for _ in range(calls):
            call()
        return (time.perf_counter() - started) / calls

    return batch


def ratio(ours: float, theirs: float) -> float:
    """``ours / theirs``, unrounded: targets compare this; tables round it for display."""
    return ours / theirs if theirs else float("inf")


async def ainterleaved(
    contenders: dict[str, Callable[[], Any]], rounds: int, *, budget: float = 60.0
) -> dict[str, float]:
    """:func:`interleaved` for async batches (each callable returns an awaitable of seconds)."""
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    started = time.perf_counter()
    for round_number, order in enumerate(rotations(list(contenders), rounds)):
        for name in order:
            samples[name].append(await contenders[name]())
        if round_number >= 2 and time.perf_counter() - started > budget:
            break
    return {name: statistics.median(values) for name, values in samples.items()}
