"""Client instructions per asyncio call, counted by callgrind: repeatable under any load.

    python -m tests.benchmarks.instructions [CONTENDER ...]

Each contender runs in a client process under ``valgrind --tool=callgrind`` against the
emulator served from a process of its own (:mod:`.serve`, not counted): once making 100
calls and once making 600, after 20 warm-up calls each; the difference over 500 is the
client's instructions per call (TLS included). Contenders: ``eightyeightpay`` (a manager's
``request()``), ``transport alone`` (the manager's transport sending a request built once,
the body parsed), ``raw h11`` and ``aiohttp``, as in :mod:`.load`.

Instructions are not time: they leave out the kernel's work (system calls, the loopback
network) and cache misses, so aiohttp, whose HTTP parser is C, runs far fewer
instructions per call than a pure-Python client for a similar CPU time. They compare the
Python work of two versions, or of two contenders built alike, exactly.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from typing import Any

from .serve import emulator_process

CONTENDERS = ("eightyeightpay", "transport alone", "raw h11", "aiohttp")


async def _calls(name: str, count: int, emulator: dict[str, Any]) -> None:
    from .load import _async_call
    from .overhead import transport_alone

    call, close, manager = await _async_call(
        "eightyeightpay" if name == "transport alone" else name, emulator
    )
    if name == "transport alone":
        call = await transport_alone(manager)
    for _ in range(20 + count):
        await call()
    await close()


def _count(name: str, calls: int, emulator: dict[str, Any]) -> int:
    command = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        "-m",
        "tests.benchmarks.instructions",
        "--child",
        name,
        str(calls),
        json.dumps(emulator),
    ]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=900, check=True, env=dict(os.environ)
    )
    found = re.search(r"Collected : (\d+)", result.stderr)
    assert found is not None, result.stderr[-2000:]
    return int(found.group(1))


def run(names: tuple[str, ...] = CONTENDERS) -> dict[str, float]:
    """Instructions per call of each contender (600 calls minus 100, over 500)."""
    figures: dict[str, float] = {}
    with emulator_process() as emulator:
        for name in names:
            figures[name] = (_count(name, 600, emulator) - _count(name, 100, emulator)) / 500
    return figures


def main(argv: list[str] | None = None) -> None:
    """Print each contender's instructions per call (or, with ``--child``, make the calls)."""
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--child"]:
        asyncio.run(_calls(args[1], int(args[2]), json.loads(args[3])))
        return
    for name, per_call in run(tuple(args) or CONTENDERS).items():
        print(f"{name:16} {per_call:10.0f} instructions per call")


if __name__ == "__main__":
    main()
