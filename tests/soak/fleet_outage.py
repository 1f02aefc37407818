"""A fleet on 88Pay's real limits through a store outage of minutes (issue 13's must-show).

Not part of the default test run (it takes about five minutes).
``python -m tests.soak.fleet_outage`` starts a redis-server on a free loopback port and the
HTTPS emulator with 88Pay's own figures (60 s tokens, 10 token requests a minute and 100 an
hour), runs 8 processes of tests/e2e/fleet_worker.py (threads, asyncio and trio mixed, each
calling ``get_token()`` every 20 ms with the default policy and deadline, or ``--deadline``
seconds), kills Redis (SIGKILL: connections refused at once) after ``--healthy`` seconds,
starts it again ``--down`` seconds later (120 by default) and lets the fleet run
``--after`` seconds more.
It prints the token requests (before, during and after the outage), the 429s the emulator
answered, the calls that failed by error type, the tokens handed out past their expiry, and
how far apart the processes' first refreshes alone were; ``--json FILE`` writes the same.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from typing import Any

from eightyeightpay.plugins.sandbox import SandboxServer
from tests.e2e.workers import TimedSandbox, Workers
from tests.servers import RedisServer


def outage(
    healthy: float, down: float, after: float, processes: int, deadline: float | None = None
) -> dict[str, Any]:
    """Run the fleet through one outage; what the emulator and the processes saw.

    ``deadline`` is each ``get_token()``'s (None: the policy's, 10 s).
    """
    redis = RedisServer()
    redis.start()
    sandbox = TimedSandbox()
    try:
        with SandboxServer(sandbox, tls=True) as server:
            duration = healthy + down + after
            options: tuple[str, ...] = ("--mode", "steady", "--duration", str(duration))
            if deadline is not None:
                options += ("--token-deadline", str(deadline))
            with Workers(server, redis.url, processes, *options) as workers:
                workers.go()
                time.sleep(healthy)
                down_at = time.time()
                redis.kill()
                time.sleep(down)
                redis.start()
                up_at = time.time()
                reports = workers.results(timeout=duration + 60)
            stats = server.sandbox.stats()
    finally:
        redis.close()
    sent = sandbox.token_times()
    errors: Counter[str] = Counter()
    for report in reports:
        errors.update(report["errors"])
    alone = sorted(t for t in sent if down_at <= t <= up_at)
    first_round = alone[:processes]
    return {
        "processes": processes,
        "deadline_s": deadline,
        "healthy_s": healthy,
        "down_s": round(up_at - down_at, 1),
        "after_s": after,
        "token_requests": stats["token_requests"],
        "token_requests_before": sum(1 for t in sent if t < down_at),
        "token_requests_during": len(alone),
        "token_requests_after": sum(1 for t in sent if t > up_at),
        "most_in_any_minute": max(
            (sum(1 for u in sent if t <= u < t + 60) for t in sent), default=0
        ),
        "rate_limited_429": stats["rate_limited"],
        "expired_token_rejections": stats["expired_token_rejections"],
        "calls": sum(report["calls"] for report in reports),
        "failed_calls": dict(errors),
        "unusable_tokens": sum(report["unusable"] for report in reports),
        "first_refreshes_alone_span_s": (
            round(first_round[-1] - first_round[0], 3) if first_round else None
        ),
        "first_refreshes_alone_s": [round(t - down_at, 3) for t in first_round],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--processes", type=int, default=8)
    parser.add_argument("--healthy", type=float, default=75.0, help="seconds before the kill")
    parser.add_argument("--down", type=float, default=120.0, help="seconds Redis stays down")
    parser.add_argument("--after", type=float, default=75.0, help="seconds after the restart")
    parser.add_argument(
        "--deadline", type=float, help="each get_token()'s, in seconds (default: the policy's)"
    )
    parser.add_argument("--json", help="write the report here")
    args = parser.parse_args()
    report = outage(args.healthy, args.down, args.after, args.processes, args.deadline)
    for name, value in report.items():
        print(f"{name}: {value}")
    if args.json:
        with open(args.json, "w") as out:
            json.dump(report, out, indent=2)


if __name__ == "__main__":
    main()
