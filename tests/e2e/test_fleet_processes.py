"""A real fleet: 8 OS processes (threaded, asyncio and trio mixed) sharing one Redis,
against the HTTPS loopback emulator."""

from __future__ import annotations

import itertools
import time

from eightyeightpay.plugins.sandbox import Sandbox, SandboxServer
from tests.e2e.workers import COMPRESSED, LIFETIME, Workers, compressed_sandbox
from tests.servers import RedisServer


def test_eight_cold_processes_make_exactly_one_token_request(redis_server: RedisServer) -> None:
    with SandboxServer(Sandbox(), tls=True) as server:
        with Workers(server, redis_server.url, 8, "--mode", "cold") as workers:
            workers.go()
            reports = workers.results()
        assert server.sandbox.stats()["token_requests"] == 1
    assert all(report["errors"] == {} for report in reports)
    assert len({fp for report in reports for fp in report["fingerprints"]}) == 1
    assert sum(report["sent"] for report in reports) == 1


# Real-time runs use 6 s tokens (a tenth of 88Pay's 60 s) so that three lifetimes take 20 s.
# The emulator's token limits and the managers' policy are raised in the same proportion, so
# the compressed run keeps the documented ratio of token life to rate limit.
def test_a_fleet_over_three_lifetimes_spends_what_one_process_would(
    redis_server: RedisServer,
) -> None:
    duration = "20"
    with (
        SandboxServer(compressed_sandbox(), tls=True) as alone_server,
        SandboxServer(compressed_sandbox(), tls=True) as fleet_server,
    ):
        steady = ("--mode", "steady", "--duration", duration, *COMPRESSED)
        with (
            Workers(alone_server, redis_server.url, 1, *steady) as alone,
            Workers(fleet_server, redis_server.url, 8, *steady) as fleet,
        ):
            alone.go()
            fleet.go()
            alone_reports, fleet_reports = alone.results(), fleet.results()
        one_process = alone_server.sandbox.stats()["token_requests"]
        fleet_wide = fleet_server.sandbox.stats()["token_requests"]
        assert fleet_server.sandbox.stats()["rate_limited"] == 0
        assert fleet_server.sandbox.stats()["expired_token_rejections"] == 0
    assert one_process >= 4  # three lifetimes really passed: 20 s / ~4.9 s per refresh
    assert fleet_wide <= one_process + 1
    for report in alone_reports + fleet_reports:
        assert report["errors"] == {} and report["unusable"] == 0 and report["calls"] > 100


def test_redis_down_for_longer_than_a_lifetime_fails_no_caller_and_the_fleet_rejoins(
    redis_server: RedisServer,
) -> None:
    with SandboxServer(compressed_sandbox(), tls=True) as server:
        with Workers(
            server, redis_server.url, 8, "--mode", "steady", "--duration", "24", *COMPRESSED
        ) as workers:
            workers.go()
            started = time.time()
            time.sleep(5)
            down_at = time.time()
            redis_server.stop()
            time.sleep(LIFETIME + 2)
            redis_server.start()
            up_at = time.time()
            reports = workers.results()
        assert server.sandbox.stats()["rate_limited"] == 0
    outage = up_at - down_at
    for report in reports:
        assert report["errors"] == {} and report["unusable"] == 0
        during = [t for t in report["sends"] if down_at <= t <= up_at]
        assert len(during) <= int(outage // LIFETIME) + 1  # at most one extra per lifetime
    # After Redis is back (allowing one lifetime to converge), the fleet shares again:
    # fleet-wide sends are those of one process, not one per process.
    settled = up_at + LIFETIME
    after = sorted(t for report in reports for t in report["sends"] if t > settled)
    span = started + 24 - settled
    assert len(after) <= int(span // (LIFETIME * 0.8)) + 2
    assert len(after) < 8


def test_redis_down_for_two_lifetimes_spreads_the_fleet_within_its_share(
    redis_server: RedisServer,
) -> None:
    """8 processes learn the fleet's size while Redis is up; down for two token lifetimes,
    each keeps to 10 // 8 = 1 token request per compressed minute and refreshes at its own
    time: no 429 at the emulator, and no caller fails."""
    with SandboxServer(compressed_sandbox(), tls=True) as server:
        with Workers(
            server, redis_server.url, 8, "--mode", "steady", "--duration", "26", *COMPRESSED
        ) as workers:
            workers.go()
            time.sleep(8)
            down_at = time.time()
            redis_server.stop()
            time.sleep(2 * LIFETIME)
            redis_server.start()
            up_at = time.time()
            reports = workers.results()
        stats = server.sandbox.stats()
    failed = sum(sum(report["errors"].values()) for report in reports)
    during = sorted(t for report in reports for t in report["sends"] if down_at <= t <= up_at)
    print(
        f"8 processes, Redis down {up_at - down_at:.1f} s: {stats['token_requests']} token "
        f"requests, {len(during)} while down, {stats['rate_limited']} x 429, {failed} failed "
        f"calls of {sum(report['calls'] for report in reports)}"
    )
    assert stats["rate_limited"] == 0
    assert failed == 0
    assert all(report["unusable"] == 0 for report in reports)
    assert len(during) >= 8  # each process did refresh on its own while Redis was down
    for report in reports:
        mine = [t for t in report["sends"] if down_at <= t <= up_at]
        assert all(b - a >= LIFETIME - 0.5 for a, b in itertools.pairwise(mine))
