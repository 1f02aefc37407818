"""A fleet that starts while its Redis is unreachable: 8 OS processes (threaded, asyncio and
trio mixed) that never reach the store, against the HTTPS loopback emulator with 88Pay's
token life and limits compressed tenfold (6 s tokens, 10 per 6 s, 100 per 360 s) and the
workers on ``Policy.compressed(10)``: every limit divided by the same factor."""

from __future__ import annotations

from eightyeightpay.plugins.sandbox import SandboxServer
from tests.e2e.workers import COMPRESSED, FACTOR, Workers, compressed_sandbox

UNREACHABLE = "redis://:hunter2@127.0.0.1:1/9"
"""Port 1 is closed: no process ever reaches the store."""


def most_in_any(times: list[float], span: float) -> int:
    return max((sum(1 for u in times if t <= u < t + span) for t in times), default=0)


def test_a_fleet_that_never_reaches_its_store_draws_no_429() -> None:
    """Each process took itself to be alone and spent the whole budget: the trial saw 115
    token requests and 15 x 429 in 75 s, then every process refused for 295 s. Now each
    keeps to the share of a fleet of 10 (Policy.assumed_fleet_size): 1 per 6 s."""
    duration = 20.0
    sandbox = compressed_sandbox()
    with SandboxServer(sandbox, tls=True) as server:
        steady = ("--mode", "steady", "--duration", str(duration), *COMPRESSED)
        with Workers(server, UNREACHABLE, 8, *steady) as workers:
            workers.go()
            reports = workers.results()
        stats = server.sandbox.stats()
        times = sandbox.token_times()
    minute, hour = 60.0 / FACTOR, 3600.0 / FACTOR
    assert stats["rate_limited"] == 0, stats
    assert most_in_any(times, minute) <= 10 and most_in_any(times, hour) <= 100
    # Within the budget of the run: 10 per 6 s, over 20 s at most 4 windows' worth.
    assert stats["token_requests"] <= 40, stats
    for report in reports:
        assert report["sent"] >= 1  # every process did get a token
        assert set(report["errors"]) <= {"RateLimited"}  # refused here, before sending
        assert report["unusable"] == 0
