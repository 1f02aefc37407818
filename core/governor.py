"""The rate governor: 88Pay's limits kept as rolling windows over this side's sends.

One governor for both budgets: the token requests' and the API calls'.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right

import attrs

__all__ = ["RateWindow"]

MINUTE = 60.0
HOUR = 3600.0


@attrs.frozen
class RateWindow:
    """Send times within the last hour (token requests, or API calls), oldest first.

    Rolling windows are stricter than fixed ones: keeping at most ``per_minute`` sends in
    every 60 s span also keeps them within every calendar minute the server may count.
    """

    sends: tuple[float, ...] = ()
    """Monotonic times of the sends still inside the hour window, in ascending order.

    Every question below finds the window's edges by bisection, so a full hour (1,000
    API calls at 88Pay's limit) costs a few comparisons, not a scan per call.
    """

    def record(self, now: float, hour: float = HOUR) -> RateWindow:
        """The window after a send at ``now``, keeping the sends of the last ``hour`` seconds.

        ``now`` takes its place in time order (a send reported late, such as a fleet's
        backfill, may be older than the last one).
        """
        sends = self.sends
        start = bisect_right(sends, now - hour)
        if not sends or sends[-1] <= now:
            return RateWindow((sends[start:] if start else sends) + (now,))
        at = max(start, bisect_right(sends, now))
        return RateWindow((*sends[start:at], now, *sends[at:]))

    def forget(self, sent: float) -> RateWindow:
        """The window without the send at ``sent`` (a request that never left)."""
        sends = self.sends
        at = bisect_left(sends, sent)
        if at == len(sends) or sends[at] != sent:
            return self
        return RateWindow(sends[:at] + sends[at + 1 :])

    def move(self, sent: float, to: float, hour: float = HOUR) -> RateWindow:
        """The window with the send at ``sent`` counted at ``to`` instead.

        For a send known to have reached 88Pay later than it was counted (its answer came
        back at ``to``): the count stays the same. Unchanged when no send is at ``sent``.
        """
        sends = self.sends
        at = bisect_left(sends, sent)
        if at == len(sends) or sends[at] != sent:
            return self
        if sends[-1] <= to:  # the usual case: the latest answer; one new tuple
            start = bisect_right(sends, to - hour)
            if start > at:
                return RateWindow((*sends[start:], to))
            return RateWindow((*sends[start:at], *sends[at + 1 :], to))
        return RateWindow(sends[:at] + sends[at + 1 :]).record(to, hour)

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
        sends = self.sends
        total = len(sends)
        hour_start = bisect_right(sends, now - hour_span)
        minute_start = bisect_right(sends, now - minute_span, hour_start)
        earliest = now
        if total - minute_start >= per_minute:
            earliest = max(earliest, _leaves(sends[total - per_minute], minute_span))
        if total - hour_start >= per_hour:
            earliest = max(earliest, _leaves(sends[total - per_hour], hour_span))
        return earliest

    def count(self, now: float, span: float) -> int:
        """Sends in the ``span`` seconds up to ``now``."""
        return len(self.sends) - bisect_right(self.sends, now - span)


def _leaves(sent: float, span: float) -> float:
    """The first time at which a send at ``sent`` is outside a window of ``span`` seconds.

    ``sent + span`` can round so that the send still counts; step past any such rounding.
    """
    at = sent + span
    while at - span < sent:
        at = math.nextafter(at, math.inf)
    return at
