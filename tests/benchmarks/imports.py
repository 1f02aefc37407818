"""Import cost: ``import eightyeightpay`` against ``import urllib3`` in fresh interpreters."""

from __future__ import annotations

import statistics
import subprocess
import sys

from .common import Figures, ratio


def _cumulative_us(module: str) -> int:
    """The cumulative microseconds ``-X importtime`` reports for ``module`` itself."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {module}"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    for line in reversed(result.stderr.splitlines()):
        parts = [part.strip() for part in line.removeprefix("import time:").split("|")]
        if len(parts) == 3 and parts[2] == module:
            return int(parts[1])
    raise RuntimeError(f"no importtime line for {module}")


def run(quick: bool) -> Figures:
    """Median over interleaved fresh subprocesses."""
    repeats = 7 if quick else 21
    samples: dict[str, list[int]] = {"eightyeightpay": [], "urllib3": []}
    for index in range(repeats):
        order = list(samples) if index % 2 == 0 else list(reversed(samples))
        for module in order:
            samples[module].append(_cumulative_us(module))
    ours = statistics.median(samples["eightyeightpay"])
    theirs = statistics.median(samples["urllib3"])
    return {
        "eightyeightpay_ms": round(ours / 1000, 2),
        "urllib3_ms": round(theirs / 1000, 2),
        "ours_vs_urllib3": ratio(ours, theirs),
        "repeats": repeats,
    }
