"""The rate governor: 88Pay's token limits kept as rolling windows over this side's sends."""

from __future__ import annotations

import math

import attrs

__all__ = ["RateWindow"]

MINUTE = 60.0
HOUR = 3600.0


@attrs.frozen
class RateWindow:
    """Send times of token requests within the last hour, oldest first.

    Rolling windows are stricter than fixed ones: keeping at most ``per_minute`` sends in
    every 60 s span also keeps them within every calendar minute the server may count.
    """

    sends: tuple[float, ...] = ()
    """Monotonic times of the sends still inside the hour window."""

    def record(self, now: float, hour: float = HOUR) -> RateWindow:
        """The window after a send at ``now``, keeping the sends of the last ``hour`` seconds."""
        kept = tuple(t for t in self.sends if t > now - hour)
        return RateWindow((*kept, now))

    def forget(self, sent: float) -> RateWindow:
        """The window without the send at ``sent`` (a request that never left)."""
        sends = list(self.sends)
        if sent in sends:
            sends.remove(sent)
        return RateWindow(tuple(sends))

    def next_allowed(
        self,
        now: float,
        per_minute: int,
        per_hour: int,
        minute_span: float = MINUTE,
        hour_span: float = HOUR,
    ) -> float:
        """The earliest time at or after ``now`` when one more send keeps both limits.

        The windows span ``minute_span`` and ``hour_span`` seconds (shorter for a compressed
        :class:`~eightyeightpay.policy.Policy`).
        """
        hour = [t for t in self.sends if t > now - hour_span]
        minute = [t for t in hour if t > now - minute_span]
        earliest = now
        if len(minute) >= per_minute:
            earliest = max(earliest, _leaves(minute[len(minute) - per_minute], minute_span))
        if len(hour) >= per_hour:
            earliest = max(earliest, _leaves(hour[len(hour) - per_hour], hour_span))
        return earliest

    def count(self, now: float, span: float) -> int:
        """Sends in the ``span`` seconds up to ``now``."""
        return sum(1 for t in self.sends if t > now - span)


def _leaves(sent: float, span: float) -> float:
    """The first time at which a send at ``sent`` is outside a window of ``span`` seconds.

    ``sent + span`` can round so that the send still counts; step past any such rounding.
    """
    at = sent + span
    while at - span < sent:
        at = math.nextafter(at, math.inf)
    return at
