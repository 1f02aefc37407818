"""A controllable clock for deterministic tests."""

from __future__ import annotations

import math
import threading

__all__ = ["FakeClock"]


class FakeClock:
    """A clock that moves only when told to.

    Calling the clock returns the current time in float seconds. The same object can stand
    in for both the wall clock (``time.time``) and the monotonic clock: it starts at an
    epoch-like value so JWT ``iat``/``exp`` claims look real, and it never goes backwards.
    It is safe to read and advance from several threads.
    """

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        if not math.isfinite(start):
            raise ValueError("start must be a finite number of seconds")
        self._now = float(start)
        self._lock = threading.Lock()

    def __call__(self) -> float:
        """Return the current time in seconds."""
        with self._lock:
            return self._now

    def now(self) -> float:
        """Return the current time in seconds (the same as calling the clock)."""
        return self()

    def advance(self, seconds: float) -> float:
        """Move the clock forward by ``seconds`` (never backwards) and return the new time."""
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError("a FakeClock only moves forward by a finite, non-negative amount")
        with self._lock:
            self._now += seconds
            return self._now

    def __repr__(self) -> str:
        return f"FakeClock({self():.3f})"
