"""Run every benchmark, print one table, write the figures as JSON.

    python -m tests.benchmarks.run [--quick] [--json docs/performance.json]

The real-process fleet runs in the background (3 real minutes, 30 s with ``--quick``)
while the simulations run in a child process; the timing benchmarks run before it starts.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import multiprocessing
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from . import cached, fleet, fleet_sim, imports, overhead, sim_hour, stampede
from .common import Figures


def _machine() -> dict[str, Any]:
    model = "unknown"
    with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"nproc": os.cpu_count(), "python": platform.python_version(), "cpu": model}


def _simulations(quick: bool) -> Figures:
    return {"simulated_hour": sim_hour.run(quick), "fleet_simulation": fleet_sim.run(quick)}


def _targets(f: Figures) -> list[tuple[str, str, bool]]:
    """Each target of issue 6 with the figure that decides it."""
    rows: list[tuple[str, str, bool]] = []
    threads = f["cached"]["threads"]
    r = threads["reference check"]["ours_vs_this"]
    rows.append(("cached, threads <= 1.1x reference check", f"{r}x", r <= 1.1))
    r = threads[cached.OBSERVED]["vs_yardstick"]
    rows.append(("cached, threads, telemetry on <= 1.1x reference check", f"{r}x", r <= 1.1))
    for other in ("botocore get_frozen_credentials", "google-auth before_request"):
        r = threads[other]["ours_vs_this"]
        rows.append((f"cached, threads faster than {other}", f"{r}x", r < 1.0))
    for runtime in ("asyncio", "trio"):
        r = f["cached"][runtime]["await cached coroutine"]["ours_vs_this"]
        rows.append((f"cached, {runtime} <= 1.1x await of cached coroutine", f"{r}x", r <= 1.1))
        figures = f["cached"][runtime]
        r = round(
            figures[cached.OBSERVED]["ns_per_call"]
            / figures["reference check (async)"]["ns_per_call"],
            3,
        )
        label = f"cached, {runtime}, telemetry on <= 1.1x reference check (async)"
        rows.append((label, f"{r}x", r <= 1.1))
    for name, figures in f["simulated_hour"].items():
        if name.startswith("eightyeightpay"):
            ok = (
                figures["token_requests"] <= 74
                and figures["callers_waited_after_first_token"] == 0
                and figures["rate_limited_429"] == 0
                and figures["expired_tokens_used"] == 0
            )
            text = (
                f"{figures['token_requests']} requests, "
                f"{figures['callers_waited_after_first_token']} waited, "
                f"{figures['rate_limited_429']} 429, {figures['expired_tokens_used']} expired"
            )
            rows.append((f"simulated hour, {name}", text, ok))
    for name, figures in f["stampede"].items():
        n = figures["eightyeightpay"]["token_requests"]
        rows.append(
            (
                f"stampede {name}: one token request",
                f"{n} (reference: {figures['reference']['token_requests']})",
                n == 1,
            )
        )
    fl = f["fleet"]
    one = fl["one process, redis store"]["token_requests"]
    redis = next(v for k, v in fl.items() if k.endswith("redis store") and not k.startswith("one"))
    rows.append(
        (
            "fleet of 8 with redis: within one of a single process, no 429",
            f"{redis['token_requests']} vs {one}, {redis['rate_limited_429']} 429",
            redis["token_requests"] <= one + 1 and redis["rate_limited_429"] == 0,
        )
    )
    sim = f["fleet_simulation"]
    single = sim["1 (steady, a call every 50 ms)"]["token_requests"]
    big = sim["10000"]["token_requests"]
    rows.append(
        (
            "10,000 simulated instances: requests as one instance's",
            f"{big} vs {single}",
            big <= single,
        )
    )
    for runtime, figures in f["overhead"].items():
        r = figures[figures["yardstick"]]["ours_vs_this"]
        rows.append((f"request() overhead, {runtime} <= 1.05x raw", f"{r}x", r <= 1.05))
    return rows


def _table(f: Figures) -> str:
    lines: list[str] = []

    def section(title: str) -> None:
        lines.extend(["", title, "-" * len(title)])

    section("Cached path (one caller, warm cache)")
    for runtime, figures in f["cached"].items():
        for name, value in figures.items():
            if isinstance(value, dict):
                lines.append(
                    f"{runtime:8} {name:34} {value['ns_per_call']:>9.1f} ns/call "
                    f"{value['calls_per_second']:>12,}/s  ours/this {value['ours_vs_this']:.3f}"
                )
    section("Stampede (cold cache, HTTPS loopback emulator)")
    for case, pair in f["stampede"].items():
        for who, value in pair.items():
            lines.append(
                f"{case:15} {who:15} token requests {value['token_requests']:>6}  429s "
                f"{value['rate_limited']:>6}  served {value['served']:>6}  failed "
                f"{value['failed']:>6}  all returned in {value['seconds_until_all_returned']:.3f} s"
            )
    section(f"Simulated hour ({f['simulated_hour']['calls_per_second']} calls/s, fake clock)")
    for name, value in f["simulated_hour"].items():
        if isinstance(value, dict):
            lines.append(
                f"{name:26} token requests {value['token_requests']:>6}  429s "
                f"{value['rate_limited_429']:>6}  expired used {value['expired_tokens_used']:>3}  "
                f"waited {value['callers_waited_on_network']:>6} (after 1st "
                f"{value['callers_waited_after_first_token']:>6})  failed {value['calls_failed']:>6}"
                f" of {value['calls']}"
            )
    section(f"Fleet of OS processes, {f['fleet']['seconds']:.0f} real seconds, real 60 s tokens")
    for name, value in f["fleet"].items():
        if isinstance(value, dict):
            lines.append(
                f"{name:38} token requests {value['token_requests']:>5}  429s "
                f"{value['rate_limited_429']:>5}  failed calls {value['calls_failed']:>6} of "
                f"{value['calls']:>6}  unusable {value['unusable_tokens_handed_out']}"
            )
    section("Fleet simulation (real core, simulated store, simulated hour)")
    for name, value in f["fleet_simulation"].items():
        lines.append(
            f"{name:32} token requests {value['token_requests']:>4}  429s "
            f"{value['rate_limited_429']:>3}  store ops/s {value['store_operations_per_second']:>7}"
            f"  worst wait {value['worst_wait_seconds']:.3f} s  failed {value['calls_failed']}"
            f" of {value['calls']}"
        )
    section("request() overhead (HTTPS loopback emulator, per call)")
    for runtime, figures in f["overhead"].items():
        for name, value in figures.items():
            if isinstance(value, dict):
                lines.append(
                    f"{runtime:8} {name:26} {value['us_per_call']:>8.1f} us/call  "
                    f"ours/this {value['ours_vs_this']:.3f}"
                )
    section("Import cost (-X importtime, cumulative, fresh interpreters)")
    i = f["imports"]
    lines.append(
        f"import eightyeightpay {i['eightyeightpay_ms']} ms   import urllib3 {i['urllib3_ms']} ms"
        f"   ratio {i['ours_vs_urllib3']}   ({i['repeats']} runs each, median)"
    )
    section("Targets of issue 6")
    for target, figure, met in _targets(f):
        lines.append(f"{'met   ' if met else 'MISSED'} {target:62} {figure}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the suite."""
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks.run")
    parser.add_argument("--quick", action="store_true", help="shorter runs (about 2 minutes)")
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    args = parser.parse_args(argv)
    started = time.monotonic()
    figures: Figures = {"machine": _machine(), "quick": args.quick}

    def step(name: str) -> None:
        print(f"[{time.monotonic() - started:6.1f} s] {name}", file=sys.stderr, flush=True)

    step("import cost")
    figures["imports"] = imports.run(args.quick)
    step("cached path")
    figures["cached"] = cached.run(args.quick)
    step("request overhead")
    figures["overhead"] = overhead.run(args.quick)
    step("stampede")
    figures["stampede"] = stampede.run(args.quick)
    step("fleet of processes (background) + simulations")
    with fleet.running(args.quick) as running_fleet:
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
            figures.update(pool.submit(_simulations, args.quick).result(timeout=900))
        step("waiting for the fleet")
        figures["fleet"] = running_fleet.finish()
    figures["seconds"] = round(time.monotonic() - started, 1)
    figures["targets"] = [{"target": t, "figure": v, "met": m} for t, v, m in _targets(figures)]
    print(_table(figures))
    print(f"\n(total {figures['seconds']} s)")
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
