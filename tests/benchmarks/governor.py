"""The API governor's reservation per call, at 88Pay's limits with a full hour of calls.

    python -m tests.benchmarks.governor

Every ``request()`` reserves its send with the API governor (88Pay's 60/minute and
1,000/hour API limits). Near the limit the hour's window holds about 1,000 sends.
Contenders, on one machine each, a call every 3.7 s of a fake clock (973 an hour, just
under the limit; 16 a minute), the window filled with the hour's sends first:

- ``no limits``: a policy without API limits, which keeps only a 429's cool-down (the
  floor: what a reservation costs with no window to read);
- ``88Pay's limits, full hour``: the default policy, as a user runs it;
- ``full scan, full hour``: the same answers from a window that scans every send and
  rebuilds its tuple, as the governor did before it bisected (the yardstick for the change);
- ``88Pay's limits, full hour, with each send's end``: as the second, and each send's end
  (its answer 0.3 s later) moves it in the window, as ``request()`` does: the governor's
  whole cost per call.

Each figure is microseconds per reservation, the median of interleaved rounds, and its
ratio to the full scan's.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable

from eightyeightpay.governor import HOUR, RateWindow
from eightyeightpay.machine import TokenMachine
from eightyeightpay.plugins.sandbox import DEFAULT_API_KEY, DEFAULT_MERCHANT_ID
from eightyeightpay.policy import Policy
from tests.support import ScanningWindow

from .common import Figures, interleaved, ratio

SPACING = 3.7
"""Seconds between calls: 973 an hour, just under 88Pay's 1,000/hour API limit."""
SENDS = int(HOUR / SPACING)
"""Sends in a full hour at that pace."""


def _machine(policy: Policy, window: type[RateWindow]) -> TokenMachine:
    from eightyeightpay.credentials import Credentials

    credentials = Credentials(DEFAULT_API_KEY, DEFAULT_MERCHANT_ID)
    machine = TokenMachine(credentials, policy, random.Random(1))
    machine.api_window = window(tuple(i * SPACING for i in range(SENDS)))
    return machine


def _reservations(machine: TokenMachine, calls: int, *, ended: bool = False) -> Callable[[], float]:
    clock = [SENDS * SPACING]

    def batch() -> float:
        reserve = machine.reserve_api_locally
        end = machine.api_send_ended
        now = clock[0]
        started = time.perf_counter()
        for _ in range(calls):
            now += SPACING
            if reserve(now) != 0.0:
                raise AssertionError("a call under the limits was held back")
            if ended:
                end(now, now + 0.3)
        seconds = (time.perf_counter() - started) / calls
        clock[0] = now
        return seconds

    return batch


def run(quick: bool = False) -> Figures:
    """Microseconds per reservation of each contender, and each against the full scan."""
    rounds, calls = (5, 2_000) if quick else (15, 10_000)
    contenders = {
        "no limits": _reservations(
            _machine(Policy(api_per_minute=None, api_per_hour=None), RateWindow), calls
        ),
        "88Pay's limits, full hour": _reservations(_machine(Policy(), RateWindow), calls),
        "full scan, full hour": _reservations(_machine(Policy(), ScanningWindow), calls),
        "88Pay's limits, full hour, with each send's end": _reservations(
            _machine(Policy(), RateWindow), calls, ended=True
        ),
    }
    per_call = interleaved(contenders, rounds)
    scan = per_call["full scan, full hour"]
    return {
        name: {"us_per_call": seconds * 1e6, "vs_full_scan": ratio(seconds, scan)}
        for name, seconds in per_call.items()
    } | {"sends_in_hour": SENDS}


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
