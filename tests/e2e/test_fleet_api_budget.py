"""The fleet's API budget (issue 12: "with a fleet store the budget is fleet-wide"): OS
processes on one Redis, against the HTTPS loopback emulator and its API limits (88Pay's 60
calls a minute and 1,000 an hour per merchant, real time: a round of calls takes seconds)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from eightyeightpay.plugins.sandbox import Sandbox, SandboxServer
from tests.e2e.workers import Workers
from tests.servers import RedisServer

PROCESSES = 8
LIMIT = 60  # the emulator's and the policy's API calls per minute (88Pay's)


def totals(reports: list[dict[str, Any]], round_: int) -> Counter[str]:
    """Sent, refused here and answered 429, over the fleet, in round ``round_``."""
    total: Counter[str] = Counter()
    for report in reports:
        total.update(report["rounds"][round_])
    return total


def test_a_burst_of_api_calls_across_processes_sends_only_the_fleets_budget(
    redis_server: RedisServer,
) -> None:
    """8 processes make 15 calls each at once: the fleet sends 60, refuses the rest itself."""
    with SandboxServer(Sandbox(), tls=True) as server:
        with Workers(
            server, redis_server.url, PROCESSES, "--mode", "api", "--calls", "15"
        ) as fleet:
            fleet.go()
            reports = fleet.results()
        stats = server.sandbox.stats()
    burst = totals(reports, 0)
    print(
        f"{PROCESSES} processes x 15 calls: {dict(burst)}, emulator: {stats['rate_limited']} x 429"
    )
    assert stats["rate_limited"] == 0 and burst["429"] == 0
    assert burst["sent"] == LIMIT and burst["refused"] == PROCESSES * 15 - LIMIT
    assert all(report["errors"] == {} for report in reports)


def test_a_redis_restarted_without_persistence_gets_the_fleets_api_sends_back(
    redis_server: RedisServer,
) -> None:
    """48 calls, then Redis restarts empty, then 48 more within the minute: only 12 fit.

    Each process puts its own sends of the windows back into the new, empty budget with
    its first reservation there, and reserves again only a second later (the calls' 3 s
    deadline allows the wait), when the others have put theirs back: the fleet keeps
    88Pay's 60 a minute, 0 x 429.
    """
    args = ("--mode", "api", "--calls", "6", "--rounds", "2", "--deadline", "3")
    with SandboxServer(Sandbox(), tls=True) as server:
        with Workers(server, redis_server.url, PROCESSES, *args) as fleet:
            fleet.go()
            fleet.ready()  # the first round is over
            redis_server.stop()
            redis_server.start()  # empty: --save "" --appendonly no
            fleet.release()
            reports = fleet.results()
        stats = server.sandbox.stats()
    before, after = totals(reports, 0), totals(reports, 1)
    print(
        f"before the restart: {dict(before)}; after: {dict(after)}; "
        f"emulator: {stats['rate_limited']} x 429"
    )
    assert before["sent"] == PROCESSES * 6 and before["429"] == 0
    assert stats["rate_limited"] == 0 and after["429"] == 0
    assert after["sent"] == LIMIT - PROCESSES * 6
    assert all(report["errors"] == {} for report in reports)
