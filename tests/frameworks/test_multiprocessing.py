"""multiprocessing pools of 4 processes with the fork, forkserver and spawn start methods,
each pool process making its manager in the pool's initializer.

400 charges with distinct amounts: every answer echoes its own amount, no errors, at most one
token request per pool process with the memory store and exactly one with the Redis store.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.frameworks.apps.pool_charges import PROCESSES
from tests.frameworks.support import (
    CHARGES,
    Answer,
    Served,
    check_burst,
    check_stopped_cleanly,
    environ,
    python,
    redis_server,
    run_to_end,
    sandbox_server,
)


def run_pool(
    start_method: str, store: str, out: Path, *options: str
) -> tuple[Served, dict[str, int]]:
    """Run the recipe's pool; its answers (in amount order), exit status and log, and the
    emulator's counters."""
    command = python(
        "-m",
        "tests.frameworks.apps.pool_charges",
        "--start-method",
        start_method,
        "--charges",
        str(CHARGES),
        "--out",
        str(out),
        *options,
    )
    with sandbox_server() as server, redis_server(store == "redis") as redis:
        status, log = run_to_end(command, environ(server, redis))
        stats = server.sandbox.stats()
    results = json.loads(out.read_text()) if status == 0 else []
    answers = [
        Answer(amount, 0 if "error" in result else 200, result)
        for amount, result in enumerate(results, start=1)
    ]
    assert len(answers) == CHARGES, log
    return Served(answers, status, log), stats


@pytest.mark.parametrize("store", ["memory", "redis"])
@pytest.mark.parametrize("start_method", ["fork", "forkserver", "spawn"])
def test_pool_of_four_processes(start_method: str, store: str, tmp_path: Path) -> None:
    served, stats = run_pool(start_method, store, tmp_path / "answers.json")
    name = f"multiprocessing {start_method} pool of 4"
    check_burst(name, served.answers, stats, store=store, most_workers=PROCESSES, log=served.log)
    check_stopped_cleanly(served)


@pytest.mark.parametrize("store", ["memory", "redis"])
@pytest.mark.parametrize("start_method", ["fork", "forkserver", "spawn"])
def test_a_pool_adopts_the_parents_manager(start_method: str, store: str, tmp_path: Path) -> None:
    # The parent charges first: its manager holds a token and a kept-alive connection when
    # the pool starts. Forked children use the inherited manager on connections of their own
    # (no answer crosses to another process) and keep its token; spawned ones unpickle it as
    # "build again from the environment".
    served, stats = run_pool(start_method, store, tmp_path / "answers.json", "--from-parent")
    name = f"multiprocessing {start_method} pool of 4 adopting the parent's manager"
    tally = check_burst(
        name, served.answers, stats, store=store, most_workers=PROCESSES + 1, log=served.log
    )
    if start_method == "fork":
        assert stats["token_requests"] == 1
    assert tally.workers > 1  # the children charged, not only the parent
    check_stopped_cleanly(served)
