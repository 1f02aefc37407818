"""Context switches per threaded ``request()``: the process's, from ``getrusage``.

    python -m tests.benchmarks.switches [--calls 2000]

One thread makes sequential ``request()`` calls on a warm manager against the emulator in
its own process; the figure is (voluntary + involuntary context switches of this process)
per call. Before issue 15 the deadline watchdog was notified on every call.
"""

from __future__ import annotations

import argparse
import json
import resource

from .common import Figures
from .overhead import PATH, ungoverned_manager
from .serve import emulator_process


def _switches() -> int:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_nvcsw + usage.ru_nivcsw


def measure(url: str, ca_file: str, calls: int) -> Figures:
    """Switches per call over ``calls`` sequential calls."""
    with ungoverned_manager(url, ca_file) as manager:
        for _ in range(50):
            manager.request("POST", PATH)
        before = _switches()
        for _ in range(calls):
            manager.request("POST", PATH)
        after = _switches()
    return {"calls": calls, "switches_per_call": (after - before) / calls}


def run(quick: bool) -> Figures:
    """The figure against an emulator in its own process."""
    with emulator_process() as emulator:
        return measure(emulator["url"], emulator["ca_file"], 500 if quick else 2000)


def main() -> None:
    """Print the figure as JSON."""
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks.switches")
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    with emulator_process() as emulator:
        print(json.dumps(measure(emulator["url"], emulator["ca_file"], args.calls)))


if __name__ == "__main__":
    main()
