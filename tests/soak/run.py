"""Soak: minutes of mixed load on every runtime with random faults and Redis restarts.

Not part of the default test run. ``python -m tests.soak.run --minutes 10`` prints a report
(requests served, errors by type, token requests, threads and tasks left after close,
memory growth measured with tracemalloc) and writes it as JSON with ``--json FILE``.
Everything runs on loopback: the HTTPS emulator, a redis-server on a free port.

The report's ``why`` section says why calls failed (``tests/soak/timeline.py``): the share of
calls in error, the seconds with any error, each failed call classified as explained by a
fault longer than its deadline, by 88Pay's spent token budget, or unexplained, and the
token budget's arithmetic. With ``--json FILE`` the per-second timeline behind it goes to
``FILE`` with ``.timeline.json`` for ``.json``.

``--token-fault-every SECONDS`` is a second scenario: the random faults go to any path only,
and one fault goes to the token endpoint every SECONDS. The default scenario sends half the
random faults to the token endpoint (about 277 an hour), more than 88Pay's 100 token
requests an hour can drain; steady use takes 74 of them, so 26 an hour is what the budget
absorbs (``--token-fault-every 180``: 20 an hour).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import threading
import time
import tracemalloc
from collections import Counter
from typing import Any

import trio

from eightyeightpay import EightyEightPayError
from eightyeightpay.adapters.async_manager import AsyncTokenManager, open_trio_token_manager
from eightyeightpay.adapters.sync import TokenManager
from eightyeightpay.plugins.redis_store import RedisStore
from eightyeightpay.plugins.sandbox import (
    DEFAULT_API_KEY,
    DEFAULT_MERCHANT_ID,
    Fault,
    SandboxServer,
)
from tests.servers import RedisServer
from tests.soak.timeline import Recorder, RecordingSandbox, explain, summary, timeline

FAULTS = [
    Fault.status(500),
    Fault.status(502, body=b"<html>bad gateway</html>", content_type="text/html"),
    Fault.reset(),
    Fault.truncated(),
    Fault.latency(2.0),
    Fault.malformed(b'{"status":"Success"}'),
    Fault.status(
        429, body=b'{"status":"Error","code":429,"message":"Rate limit exceeded.","retry_after":5}'
    ),
]
FAULT_LABELS = ["500", "502 html", "reset", "truncated", "latency 2 s", "malformed", "429 ra 5"]


class Tally:
    """Thread-safe counters of what callers saw."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder
        self.lock = threading.Lock()
        self.served: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.expired = 0
        self.late = 0

    def ok(self, runtime: str, token: Any) -> None:
        # Measured after the call returned: a token handed out just before its usable_until
        # can be seen a moment past it here, so only a clear overshoot counts as late.
        now = time.monotonic()
        self.recorder.ok(runtime, now)
        with self.lock:
            self.served[runtime] += 1
            self.expired += now >= token.expires_at
            self.late += now >= token.usable_until + 0.05

    def failed(self, runtime: str, error: BaseException, began: float) -> None:
        self.recorder.failed(runtime, error, began, time.monotonic())
        with self.lock:
            self.errors[f"{runtime}:{type(error).__name__}"] += 1


THREAD_GRACE_SECONDS = 15.0
"""How long the report waits for threads to end after every manager has closed.

trio keeps an idle worker of ``trio.to_thread`` (which runs the trio manager's Redis calls)
for 10 s after its last job, and a worker whose Redis call was abandoned by a cancellation
ends once that call's socket timeout passes. A thread still alive after the grace was left
running; those that ended within it are listed apart.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--json", help="write the report here")
    parser.add_argument(
        "--token-fault-every",
        type=float,
        metavar="SECONDS",
        help="a second scenario: inject a fault on the token endpoint once every SECONDS "
        "(the random faults every 3-10 s then go to any path only); by default half the "
        "random faults go to the token endpoint",
    )
    args = parser.parse_args()
    seconds = args.minutes * 60
    chooser = random.Random(8)
    recorder = Recorder()
    tally = Tally(recorder)
    managers: dict[str, Any] = {}
    tracemalloc.start()
    threads_before = {t.ident for t in threading.enumerate()}
    redis = RedisServer()
    redis.start()
    stop = threading.Event()
    memory: list[tuple[float, int]] = []
    report: dict[str, Any] = {}
    labels = {id(fault): label for fault, label in zip(FAULTS, FAULT_LABELS, strict=True)}
    sandbox = RecordingSandbox(recorder.clock, labels)
    with SandboxServer(sandbox, tls=True) as server:
        assert server.certificates is not None
        options: dict[str, Any] = {
            "base_url": server.url,
            "ca_bundle": str(server.certificates.ca_file),
        }
        started = time.monotonic()

        def threaded_callers() -> None:
            with TokenManager(
                DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, store=RedisStore(redis.url), **options
            ) as manager:
                managers["threads"] = manager

                def caller() -> None:
                    while not stop.is_set():
                        began = time.monotonic()
                        try:
                            tally.ok("threads", manager.get_token())
                        except EightyEightPayError as error:
                            tally.failed("threads", error, began)
                        time.sleep(0.01)

                workers = [threading.Thread(target=caller) for _ in range(8)]
                for worker in workers:
                    worker.start()
                for worker in workers:
                    worker.join()

        def asyncio_callers() -> None:
            async def main() -> None:
                async with AsyncTokenManager(
                    DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, store=RedisStore(redis.url), **options
                ) as manager:
                    managers["asyncio"] = manager

                    async def caller() -> None:
                        while not stop.is_set():
                            began = time.monotonic()
                            try:
                                tally.ok("asyncio", await manager.get_token())
                            except EightyEightPayError as error:
                                tally.failed("asyncio", error, began)
                            await asyncio.sleep(0.01)

                    async def api_calls() -> None:  # within 88Pay's 60 calls a minute
                        while not stop.is_set():
                            began = time.monotonic()
                            try:
                                response = await manager.request(
                                    "POST", f"/api/balance?id={DEFAULT_MERCHANT_ID}"
                                )
                                recorder.ok("api", time.monotonic())
                                with tally.lock:
                                    tally.served[f"api:{response.status}"] += 1
                            except EightyEightPayError as error:
                                tally.failed("api", error, began)
                            await asyncio.sleep(2)

                    await asyncio.gather(api_calls(), *(caller() for _ in range(50)))
                report["asyncio_tasks_left"] = len(asyncio.all_tasks()) - 1

            asyncio.run(main())

        def trio_callers() -> None:
            async def main() -> None:
                async with open_trio_token_manager(
                    DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, store=RedisStore(redis.url), **options
                ) as manager:
                    managers["trio"] = manager

                    async def caller() -> None:
                        while not stop.is_set():
                            began = time.monotonic()
                            try:
                                tally.ok("trio", await manager.get_token())
                            except EightyEightPayError as error:
                                tally.failed("trio", error, began)
                            await trio.sleep(0.01)

                    async with trio.open_nursery() as nursery:
                        for _ in range(50):
                            nursery.start_soon(caller)
                here = trio.lowlevel.current_task()
                report["trio_tasks_left"] = sum(len(n.child_tasks) for n in here.child_nurseries)

            trio.run(main)

        drivers = [
            threading.Thread(target=f, name=f.__name__)
            for f in (threaded_callers, asyncio_callers, trio_callers)
        ]
        for driver in drivers:
            driver.start()

        def sample() -> None:  # the library's own view, once a second
            while not stop.wait(1.0):
                row: dict[str, Any] = {"t": round(recorder.clock(), 1)}
                for name, manager in list(managers.items()):
                    stats = manager.stats(fleet=name == "threads")
                    row[name] = {
                        "minute_spent": stats.minute_spent,
                        "hour_spent": stats.hour_spent,
                        "fleet_minute_spent": stats.fleet_minute_spent,
                        "fleet_hour_spent": stats.fleet_hour_spent,
                        "cool_down": round(stats.cool_down_remaining, 2),
                        "next_request_in": round(stats.next_request_in, 2),
                        "failures_in_row": stats.failures_in_row,
                        "token_left": None
                        if stats.token_remaining is None
                        else round(stats.token_remaining, 1),
                        "store": stats.store_mode,
                    }
                row["token_faults_pending"] = sandbox.pending_token_faults()
                recorder.stats.append(row)

        sampler = threading.Thread(target=sample, name="sampler")
        sampler.start()

        restarts = faults = 0
        next_token_fault = time.monotonic() + (args.token_fault_every or 0)
        early: tracemalloc.Snapshot | None = None
        next_restart = time.monotonic() + 45
        while time.monotonic() - started < seconds:
            time.sleep(chooser.uniform(3, 10))
            fault, path = chooser.choice(FAULTS), chooser.choice(["/api/auth/token", None])
            if args.token_fault_every:
                path = None
                if time.monotonic() >= next_token_fault:
                    sandbox.inject(chooser.choice(FAULTS), path="/api/auth/token")
                    faults += 1
                    next_token_fault = time.monotonic() + args.token_fault_every
            sandbox.inject(fault, path=path)
            faults += 1
            if time.monotonic() >= next_restart:
                redis.stop()
                down = [round(recorder.clock(), 2)]
                time.sleep(chooser.uniform(3, 12))
                redis.start()
                recorder.redis_down.append([*down, round(recorder.clock(), 2)])
                restarts += 1
                next_restart = time.monotonic() + chooser.uniform(45, 90)
            current, _ = tracemalloc.get_traced_memory()
            memory.append((time.monotonic() - started, current))
            if early is None and time.monotonic() - started >= 120:
                early = tracemalloc.take_snapshot()
        stop.set()
        ran = recorder.clock()
        sampler.join(timeout=60)
        for driver in drivers:
            driver.join(timeout=60)
        stats = server.sandbox.stats()
    redis.close()
    time.sleep(0.5)
    growth: list[str] = []
    if early is not None:
        late = tracemalloc.take_snapshot()
        ignore = [tracemalloc.Filter(False, tracemalloc.__file__)]
        diffs = late.filter_traces(ignore).compare_to(early.filter_traces(ignore), "lineno")
        growth = [str(diff) for diff in diffs[:6]]
    started_since = [t for t in threading.enumerate() if t.ident not in threads_before]
    grace_ends = time.monotonic() + THREAD_GRACE_SECONDS
    for thread in started_since:
        thread.join(max(0.0, grace_ends - time.monotonic()))
    left = [t.name for t in started_since if t.is_alive()]
    ended_in_grace = [t.name for t in started_since if not t.is_alive()]
    first_minute = [m for t, m in memory if 60 <= t <= 120] or [memory[0][1]]
    last_minute = [m for t, m in memory if t >= seconds - 60] or [memory[-1][1]]
    report.update(
        minutes=args.minutes,
        served=dict(tally.served),
        errors=dict(tally.errors),
        expired_tokens_handed_out=tally.expired,
        tokens_past_margin_by_over_50ms=tally.late,
        memory_growth_top=growth,
        token_requests=stats["token_requests"],
        rate_limited_by_emulator=stats["rate_limited"],
        faults_injected=faults,
        redis_restarts=restarts,
        hung_drivers=[d.name for d in drivers if d.is_alive()],
        threads_left=left,
        threads_ended_within_grace=ended_in_grace,
        memory_kib_minute_2=round(sum(first_minute) / len(first_minute) / 1024),
        memory_kib_last_minute=round(sum(last_minute) / len(last_minute) / 1024),
        token_fault_every=args.token_fault_every,
    )
    report["why"] = explain(recorder, sandbox, ran)
    text = json.dumps(report, indent=2, sort_keys=True)
    if args.json:
        with open(args.json, "w") as handle:
            handle.write(text + "\n")
        timeline_file = args.json.removesuffix(".json") + ".timeline.json"
        with open(timeline_file, "w") as handle:
            json.dump(timeline(recorder, sandbox), handle)
        print(f"report: {args.json}; timeline: {timeline_file}")
    else:
        print(text)
    print(summary(report))


if __name__ == "__main__":
    main()
