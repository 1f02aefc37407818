"""The dashboard picture of docs/observability.md, drawn from a real (simulated) run.

One threaded manager on the in-process emulator, a fake clock and a fleet store kept in a
dict (the test suite's ``SimStore``), for one simulated hour at one call a second. At 20
minutes 88Pay answers one token request with 429; from 30 to 40 minutes the store is down.
Every ten simulated seconds ``stats()`` is sampled; the samples are drawn as an SVG chart
with four panels, by hand-written SVG (no plotting library: four polylines need none).

``docs/conf.py`` runs :func:`write` on every build; ``python docs/dashboard.py OUT.svg``
writes it elsewhere. No network, no wall clock: the picture is the same on every build.
"""

from __future__ import annotations

import contextlib
import logging
import random
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from xml.sax.saxutils import escape

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # the test suite's in-memory fleet store

from eightyeightpay import (  # noqa: E402
    DEFAULT_API_KEY,
    DEFAULT_MERCHANT_ID,
    FakeClock,
    Fault,
    FleetStore,
    ManualBackground,
    RateLimited,
    Sandbox,
    SandboxTransport,
    Stats,
    TokenManager,
)
from tests.fleet_sim import SimStore  # noqa: E402

HOUR = 3600
SAMPLE_EVERY = 10
RATE_LIMITED_AT = 20 * 60
OUTAGE = (30 * 60, 40 * 60)


class _DictStore(FleetStore):
    name = "dict"

    def __init__(self, clock: FakeClock) -> None:
        super().__init__()
        self.state = SimStore(clock)

    def operations(self) -> SimStore:  # type: ignore[override]
        return self.state


def simulate() -> list[Stats]:
    """One simulated hour; ``stats()`` every :data:`SAMPLE_EVERY` seconds."""
    clock, sandbox = FakeClock(), Sandbox()
    store, background = _DictStore(clock), ManualBackground()
    samples: list[Stats] = []
    log = logging.getLogger("eightyeightpay")
    level = log.level
    # The outage's warnings, and the ERROR of the token running out during the 429's
    # cool-down, belong to the simulated run, not to the build.
    log.setLevel(logging.CRITICAL)
    with TokenManager(
        DEFAULT_API_KEY,
        DEFAULT_MERCHANT_ID,
        transport=SandboxTransport(sandbox, clock),
        clock=clock,
        store=store,
        background=background,
        rng=random.Random(1),
    ) as manager:
        for second in range(HOUR + 1):
            if second == RATE_LIMITED_AT:
                sandbox.inject(Fault.status(429))
            store.state.down = OUTAGE[0] <= second < OUTAGE[1]
            with contextlib.suppress(RateLimited):  # the 429's cool-down: refused locally
                manager.get_token(deadline=0)
            background.run_pending()
            if second % SAMPLE_EVERY == 0:
                samples.append(manager.stats())
            clock.advance(1)
    log.setLevel(level)
    return samples


# --------------------------------------------------------------------------- drawing

WIDTH, PANEL, GAP, LEFT, RIGHT, TOP = 760, 90, 34, 70, 20, 40
COLORS = {"line": "#1f5fa8", "limit": "#c0392b", "degraded": "#e67e22", "healthy": "#27ae60"}


def _panel(
    index: int,
    title: str,
    values: Sequence[float],
    top: float,
    *,
    limit: float | None = None,
    step: bool = False,
) -> list[str]:
    y0 = TOP + index * (PANEL + GAP)
    inner = WIDTH - LEFT - RIGHT

    def x(i: int) -> float:
        return LEFT + inner * i / max(1, len(values) - 1)

    def y(v: float) -> float:
        return y0 + PANEL - PANEL * min(v, top) / top

    points: list[str] = []
    for i, v in enumerate(values):
        if step and i:
            points.append(f"{x(i):.1f},{y(values[i - 1]):.1f}")
        points.append(f"{x(i):.1f},{y(v):.1f}")
    parts = [
        f'<text x="{LEFT}" y="{y0 - 8}" class="title">{escape(title)}</text>',
        f'<rect x="{LEFT}" y="{y0}" width="{inner}" height="{PANEL}" class="frame"/>',
        f'<text x="{LEFT - 6}" y="{y0 + 4}" class="axis">{top:g}</text>',
        f'<text x="{LEFT - 6}" y="{y0 + PANEL + 4}" class="axis">0</text>',
        f'<polyline points="{" ".join(points)}" fill="none" stroke="{COLORS["line"]}" '
        'stroke-width="1.5"/>',
    ]
    if limit is not None:
        parts.append(
            f'<line x1="{LEFT}" x2="{LEFT + inner}" y1="{y(limit):.1f}" y2="{y(limit):.1f}" '
            f'stroke="{COLORS["limit"]}" stroke-dasharray="4 3"/>'
        )
    return parts


def _mode_band(index: int, modes: Sequence[str]) -> list[str]:
    y0 = TOP + index * (PANEL + GAP)
    inner = WIDTH - LEFT - RIGHT
    width = inner / len(modes)
    parts = [f'<text x="{LEFT}" y="{y0 - 8}" class="title">Store mode</text>']
    start = 0
    for i in range(1, len(modes) + 1):
        if i < len(modes) and modes[i] == modes[start]:
            continue
        color = COLORS.get(modes[start], "#999999")
        parts.append(
            f'<rect x="{LEFT + start * width:.1f}" y="{y0}" width="{(i - start) * width:.1f}" '
            f'height="{PANEL / 3:.0f}" fill="{color}"/>'
        )
        start = i
    legend = "healthy (green), degraded (orange)"
    parts.append(f'<text x="{LEFT}" y="{y0 + PANEL / 3 + 16:.0f}" class="axis-l">{legend}</text>')
    return parts


def svg(samples: Sequence[Stats]) -> str:
    """The chart of ``samples`` as an SVG document."""
    minutes = [s.minute_spent for s in samples]
    hours = [s.hour_spent for s in samples]
    remaining = [s.token_remaining or 0.0 for s in samples]
    panels: list[Callable[[int], list[str]]] = [
        lambda i: _panel(
            i, "Token requests in the rolling minute (limit 10)", minutes, 10, limit=10, step=True
        ),
        lambda i: _panel(
            i, "Token requests in the rolling hour (limit 100)", hours, 100, limit=100, step=True
        ),
        lambda i: _panel(i, "Current token's remaining usable life (s)", remaining, 50),
        lambda i: _mode_band(i, [s.store_mode for s in samples]),
    ]
    body: list[str] = []
    for index, draw in enumerate(panels):
        body += draw(index)
    height = TOP + len(panels) * (PANEL + GAP)
    axis_y = height - GAP + 20
    for minute in range(0, 61, 10):
        x = LEFT + (WIDTH - LEFT - RIGHT) * minute / 60
        body.append(f'<text x="{x:.1f}" y="{axis_y}" class="axis-m">{minute} min</text>')
    end = samples[-1]
    summary = (
        f"{end.token_requests} token requests, {end.rate_limited} answered 429, "
        f"{end.waited} callers waited, over one simulated hour at one call a second"
    )
    return "\n".join(
        [
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height + 10}" '
            f'viewBox="0 0 {WIDTH} {height + 10}" font-family="sans-serif">',
            "<style>.title{font-size:13px;fill:#222}.axis{font-size:11px;fill:#555;"
            "text-anchor:end}.axis-m{font-size:11px;fill:#555;text-anchor:middle}"
            ".axis-l{font-size:11px;fill:#555}.frame{fill:#fafafa;stroke:#bbb}</style>",
            f'<text x="{LEFT}" y="18" class="title">{escape(summary)}</text>',
            *body,
            "</svg>",
        ]
    )


def write(path: Path) -> None:
    """Run the simulation and write its chart to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(svg(simulate()) + "\n", encoding="utf-8")


if __name__ == "__main__":
    write(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs/_generated/dashboard.svg")
