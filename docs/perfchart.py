"""The comparison chart of docs/performance.md, drawn from docs/performance.json.

Two panels of horizontal bars, one bar per contender: the time of one ``request()`` (or the
peer's equivalent call) for one caller in sequence, and the calls answered per second under
load (64 threads, 1,000 asyncio tasks), each for threads and asyncio, from the first of the
full run's timing runs. Hand-written SVG: no plotting library, no network, and the same
picture on every build of the same JSON.

``docs/conf.py`` runs :func:`write` on every build; ``python docs/perfchart.py OUT.svg``
writes it elsewhere.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

HERE = Path(__file__).resolve().parent
WIDTH = 760
BAR = 16
GAP = 6
LABEL = 230
OURS = "#2a6f97"
PEER = "#a0a0a0"


def _panel(title: str, unit: str, rows: list[tuple[str, float]], top: float) -> list[str]:
    """One panel of bars starting at ``top``; the longest bar spans the width."""
    parts = [f'<text x="10" y="{top + 14}" font-weight="bold">{escape(title)}</text>']
    longest = max(value for _, value in rows) or 1.0
    span = WIDTH - LABEL - 90
    y = top + 26
    for name, value in rows:
        length = max(1.0, span * value / longest)
        colour = OURS if "eightyeightpay" in name else PEER
        parts.append(f'<text x="{LABEL - 6}" y="{y + 12}" text-anchor="end">{escape(name)}</text>')
        parts.append(
            f'<rect x="{LABEL}" y="{y}" width="{length:.1f}" height="{BAR}" fill="{colour}"/>'
        )
        parts.append(f'<text x="{LABEL + length + 6:.1f}" y="{y + 12}">{value:,.0f} {unit}</text>')
        y += BAR + GAP
    return parts


def _rows(section: dict[str, Any], key: str, skip: tuple[str, ...] = ()) -> list[tuple[str, float]]:
    rows: list[tuple[str, float]] = []
    for runtime, contenders in section.items():
        for name, figures in contenders.items():
            if name not in skip:
                rows.append((f"{runtime}, {name}", float(figures[key])))
    return rows


def svg(figures: dict[str, Any]) -> str:
    """The chart for a full run's figures (``tests.benchmarks.run --json``)."""
    load = figures["runs"][0]["load"]
    per_call = _rows(load["per_call"], "us_per_call")
    throughput = _rows(load["load"], "calls_per_second")
    sizes = load["sizes"]
    parts = _panel("Time per call, one caller (shorter is better)", "µs", per_call, 0)
    top = 26 + len(per_call) * (BAR + GAP) + 24
    title = (
        f"Calls per second, {sizes['threads']} threads or {sizes['tasks']} tasks for "
        f"{sizes['load_seconds']:.0f} s (longer is better)"
    )
    parts += _panel(title, "/s", throughput, top)
    height = top + 26 + len(throughput) * (BAR + GAP) + 10
    body = "\n".join(parts)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height:.0f}" '
        f'viewBox="0 0 {WIDTH} {height:.0f}" font-family="sans-serif" font-size="12" '
        f'role="img" aria-label="eightyeightpay against requests, httpx and aiohttp">\n'
        f"{body}\n</svg>\n"
    )


def write(out: Path, source: Path = HERE / "performance.json") -> None:
    """Write the chart of ``source`` to ``out``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(svg(json.loads(source.read_text(encoding="utf-8"))), encoding="utf-8")


if __name__ == "__main__":
    write(Path(sys.argv[1]))
