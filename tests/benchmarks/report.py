"""The figure tables of ``docs/performance.md``, written from a full run's JSON.

    python -m tests.benchmarks.report docs/performance.json

Prints Markdown: the per-call and load tables of every run, the cached path and request
overhead of every run, import and construction, waiters and context switches, the API
governor with a full hour of sends, the one-run benchmarks as the run printed them, and
every target with the figure that decides it.
Nothing is typed in by hand: the page's tables are this output.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .run import _table


def _runs(f: dict[str, Any]) -> list[dict[str, Any]]:
    return list(f["runs"])


def per_call(f: dict[str, Any]) -> list[str]:
    """Wall and client CPU per call of each contender, each run side by side."""
    runs = _runs(f)
    numbers = range(1, len(runs) + 1)
    head = " | ".join([f"run {n} wall" for n in numbers] + [f"run {n} client CPU" for n in numbers])
    lines = [
        f"| runtime | contender | {head} |",
        "|---|---|" + "---:|" * (2 * len(runs)),
    ]
    for runtime, figures in runs[0]["load"]["per_call"].items():
        for name in figures:
            walls = [f"{r['load']['per_call'][runtime][name]['us_per_call']:.1f}" for r in runs]
            cpus = [
                f"{r['load']['per_call'][runtime][name]['client_cpu_us_per_call']:.1f}"
                for r in runs
            ]
            lines.append(f"| {runtime} | {name} | {' | '.join(walls + cpus)} |")
    return lines


def load(f: dict[str, Any]) -> list[str]:
    """Throughput, errors, CPU, connections of each contender under load."""
    runs = _runs(f)
    lines = [
        "| runtime | contender | calls/s (runs) | errors (runs) | client CPU µs/call (runs) "
        "| peak connections (runs) | opened (runs) | opened after warm-up (runs) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for runtime, figures in runs[0]["load"]["load"].items():
        for name in figures:
            each = [r["load"]["load"][runtime][name] for r in runs]

            def joined(key: str, spec: str = "", each: list[Any] = each) -> str:
                return " / ".join(
                    "n/a" if value[key] is None else format(value[key], spec) for value in each
                )

            lines.append(
                f"| {runtime} | {name} | {joined('calls_per_second', '.0f')} | "
                f"{joined('errors')} | {joined('client_cpu_us_per_call', '.1f')} | "
                f"{joined('peak_connections')} | {joined('connections_opened')} | "
                f"{joined('opened_after_warm_up')} |"
            )
    kinds = [
        f"{runtime}, {name}, run {number}: "
        + ", ".join(f"{count} {kind}" for kind, count in sorted(value["error_kinds"].items()))
        for number, r in enumerate(runs, start=1)
        for runtime, figures in r["load"]["load"].items()
        for name, value in figures.items()
        if value.get("error_kinds")
    ]
    if kinds:
        lines += ["", "Errors by kind: " + "; ".join(kinds) + "."]
    return lines


def _per_run(f: dict[str, Any], section: str, cell: Callable[[dict[str, Any]], str]) -> list[str]:
    """One row per runtime and contender of ``section``, one ``cell`` per run."""
    runs = _runs(f)
    lines = [
        "| runtime | contender | " + " | ".join(f"run {n}" for n in range(1, len(runs) + 1)) + " |",
        "|---|---|" + "---|" * len(runs),
    ]
    for runtime, figures in runs[0][section].items():
        for name in figures:
            if name == "yardstick":
                continue
            cells = " | ".join(cell(run[section][runtime][name]) for run in runs)
            label = f"{name} (yardstick)" if name == figures["yardstick"] else name
            lines.append(f"| {runtime} | {label} | {cells} |")
    return lines


def cached(f: dict[str, Any]) -> list[str]:
    """The cached path against its yardstick in each run (ns per call, unrounded ratio)."""
    return _per_run(
        f, "cached", lambda value: f"{value['ns_per_call']:.1f} ns ({value['vs_yardstick']:.4f}x)"
    )


def overhead(f: dict[str, Any]) -> list[str]:
    """``request()`` against its transport alone and the raw client, each run."""
    return _per_run(
        f,
        "overhead",
        lambda value: f"{value['us_per_call']:.1f} µs (ours/this {value['ours_vs_this']:.4f})",
    )


def imports(f: dict[str, Any]) -> list[str]:
    """Import and construction medians and their ratios."""
    i = f["imports"]
    lines = ["| statement | ms |", "|---|---:|"]
    lines += [f"| `{name}` | {value:.1f} |" for name, value in i["ms"].items()]
    lines += [
        "",
        f"Import ratio {i['import_vs_urllib3']:.4f}; construction ratio "
        f"{i['construction_vs_requests_session']:.4f}; modules of asyncio, h11, trio, redis or "
        f"pymemcache loaded by the construction: "
        f"{', '.join(i['unwanted_modules_loaded']) or 'none'} ({i['repeats']} interpreters each).",
    ]
    return lines


def waiters(f: dict[str, Any]) -> list[str]:
    """Memory of 10,000 waiters against a shared future, and threaded context switches."""
    w = f["waiters"]
    mib = 1024 * 1024
    lines = [
        "| runtime | 10,000 tasks waiting on one token request | the same tasks on one shared "
        "future (trio: event) | ratio |",
        "|---|---:|---:|---:|",
        f"| asyncio | {w['asyncio']['manager, bytes'] / mib:.1f} MiB | "
        f"{w['asyncio']['shared future, bytes'] / mib:.1f} MiB | {w['asyncio']['ratio']:.4f} |",
        f"| trio | {w['trio']['manager, bytes'] / mib:.1f} MiB | "
        f"{w['trio']['shared event, bytes'] / mib:.1f} MiB | {w['trio']['ratio']:.4f} |",
        "",
        "Timers on the asyncio loop while they wait (reference, manager): "
        f"{w['asyncio']['timers on the loop (reference, manager)']}. Context switches per "
        f"threaded `request()`: {f['switches']['switches_per_call']:.3f} "
        f"({f['switches']['calls']} calls).",
    ]
    return lines


def governor(f: dict[str, Any]) -> list[str]:
    """The API governor's reservation per call with a full hour of sends."""
    g = f["governor"]
    lines = ["| reservation | µs per call | ratio to the full scan |", "|---|---:|---:|"]
    lines += [
        f"| {name} | {value['us_per_call']:.2f} | {value['vs_full_scan']:.4f} |"
        for name, value in g.items()
        if isinstance(value, dict)
    ]
    return [*lines, "", f"{g['sends_in_hour']} sends in the hour's window."]


def one_run(f: dict[str, Any]) -> list[str]:
    """The stampede, simulated hour, fleet and fleet simulation as the run printed them."""
    text = _table(f).splitlines()
    start = next(i for i, line in enumerate(text) if line.startswith("Stampede"))
    end = next(i for i, line in enumerate(text) if line.startswith("request() overhead"))
    return ["```text", *[line.rstrip() for line in text[start:end]], "```"]


def targets(f: dict[str, Any]) -> list[str]:
    """Every target, the figure of each run that decides it, and whether all runs met it."""
    lines = ["| target | figure (per run when they differ) | met |", "|---|---|---|"]
    for row in f["targets"]:
        figure = row["figure"].replace("|", "/")
        lines.append(f"| {row['target']} | {figure} | {'yes' if row['met'] else '**no**'} |")
    return lines


SECTIONS = {
    "Per call, one caller (median of interleaved rounds; µs per call)": per_call,
    "Load: 64 threads or 1,000 asyncio tasks calling for 10 s": load,
    "Cached path (ns per call; ratio to the yardstick, to 4 places)": cached,
    "request() against its transport alone and the raw client (µs per call)": overhead,
    "Import and construction (fresh interpreters, median ms)": imports,
    "Waiting callers and context switches": waiters,
    "The API governor at 88Pay's limits (µs per reservation)": governor,
    "The one-run benchmarks (token requests spent)": one_run,
    "Targets (met only when every run meets it)": targets,
}


def main(argv: list[str] | None = None) -> None:
    """Print the tables of the run in the JSON file named by the first argument."""
    args = sys.argv[1:] if argv is None else argv
    figures = json.loads(Path(args[0] if args else "docs/performance.json").read_text())
    out: list[str] = []
    for title, section in SECTIONS.items():
        out += [f"### {title}", "", *section(figures), ""]
    print("\n".join(out).rstrip())


if __name__ == "__main__":
    main()
