"""The fleet's API budget (issue 12: "with a fleet store the budget is fleet-wide"): OS
processes on one Redis, against the HTTPS loopback emulator and its API limits (88Pay's 60
calls a minute and 1,000 an hour per merchant, real time: a round of calls takes seconds)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from eightyeightpay.plugins.sandbox import Fault, Sandbox, SandboxServer
from tests.e2e.workers import TimedSandbox, Workers
from tests.servers import RedisServer

PROCESSES = 8
LIMIT = 60  # the emulator's and the policy's API calls per minute (88Pay's)
BALANCE = "/api/balance"
COOL_DOWN = 6  # seconds of Retry-After on the injected 429


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


def test_an_api_429_holds_the_whole_fleet_back_until_its_cool_down_ends(
    redis_server: RedisServer,
) -> None:
    """One process is answered 429 with ``Retry-After: 6``; six others (two per runtime),
    started and waiting before it, then make 2 calls each with a 20 s deadline: the
    emulator sees no API call before the 6 s are over, every call is sent after them."""
    sandbox = TimedSandbox()
    sandbox.inject(Fault.status(429, headers={"Retry-After": str(COOL_DOWN)}), path=BALANCE)
    args = ("--mode", "api", "--calls", "2", "--deadline", "20")
    with (
        SandboxServer(sandbox, tls=True) as server,
        Workers(server, redis_server.url, 6, *args) as fleet,
    ):
        fleet.ready()
        with Workers(server, redis_server.url, 1, "--mode", "api", "--calls", "1") as first:
            first.go()
            [hit] = first.results()
        fleet.release()
        reports = fleet.results()
    arrivals = sandbox.times(BALANCE)
    answered_429, later = arrivals[0], arrivals[1:]
    ends = answered_429 + COOL_DOWN
    starts = sorted(t for report in reports for t in report["starts"])
    print(
        f"429 at 0; the fleet's calls made from {starts[0] - answered_429:.2f} s, "
        f"seen by the emulator from {later[0] - answered_429:.2f} s"
    )
    assert hit["rounds"] == [{"429": 1}]
    assert starts[0] < ends  # the fleet did try to call during the cool-down
    assert len(later) == 12 and min(later) >= ends
    assert totals(reports, 0) == {"sent": 12}
    assert all(report["errors"] == {} for report in reports)
