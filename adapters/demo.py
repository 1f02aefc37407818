"""``eightyeightpay demo``: the library's main job, shown against the embedded emulator.

No configuration and no network: an HTTPS emulator with a throw-away CA on loopback, then
the threaded manager doing what it is for, with the emulator's own counts as evidence.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable

from eightyeightpay.errors import RateLimited
from eightyeightpay.plugins.memory import MemoryStore
from eightyeightpay.plugins.sandbox import (
    DEFAULT_API_KEY,
    DEFAULT_MERCHANT_ID,
    FakeClock,
    Fault,
    Sandbox,
    SandboxServer,
    SandboxTransport,
)
from eightyeightpay.tokens import Token

from .sync import ManualBackground, TokenManager

__all__ = ["run_demo"]

Say = Callable[[str], None]


def _table(say: Say, rows: list[tuple[str, object]]) -> None:
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        say(f"  {name.ljust(width)}  {value}")


def _stampede(manager: TokenManager, threads: int) -> set[str]:
    start = threading.Barrier(threads)
    seen: list[Token] = []
    lock = threading.Lock()

    def caller() -> None:
        start.wait()
        token = manager.get_token()
        with lock:
            seen.append(token)

    workers = [threading.Thread(target=caller) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return {token.fingerprint for token in seen}


def _simulated_hour(say: Say) -> None:
    """Refresh-ahead over a simulated hour: in-process emulator and a fake clock."""
    clock = FakeClock()
    sandbox = Sandbox()
    background = ManualBackground()
    expired = waited = 0
    with TokenManager(
        DEFAULT_API_KEY,
        DEFAULT_MERCHANT_ID,
        transport=SandboxTransport(sandbox, clock),
        clock=clock,
        background=background,
        store=MemoryStore(),
        rng=random.Random(1),
    ) as manager:
        for _ in range(3600 * 10):
            clock.advance(0.1)
            before = sandbox.stats()["token_requests"]
            token = manager.get_token()
            waited += sandbox.stats()["token_requests"] > before and before > 0
            expired += clock() >= token.usable_until
            background.run_pending()
    stats = sandbox.stats()
    _table(
        say,
        [
            ("calls (10 a second)", 36_000),
            ("token requests", stats["token_requests"]),
            ("429 answers", stats["rate_limited"]),
            ("expired tokens handed out", expired),
            ("callers that waited on the network", waited),
        ],
    )


def _rate_limit(say: Say) -> None:
    """A 429 from 88Pay: remembered, answered locally, no hammering."""
    clock = FakeClock()
    sandbox = Sandbox()
    sandbox.inject(
        Fault.status(
            429,
            body=b'{"status":"Error","code":429,"message":"Rate limit '
            b'exceeded. Please try again later.","retry_after":30}',
        )
    )
    with TokenManager(
        DEFAULT_API_KEY,
        DEFAULT_MERCHANT_ID,
        transport=SandboxTransport(sandbox, clock),
        clock=clock,
        store=MemoryStore(),
    ) as manager:
        answers = []
        for _ in range(50):
            try:
                manager.get_token()
            except RateLimited as limited:
                answers.append(limited.retry_after)
            clock.advance(0.1)
        during = sandbox.stats()["token_requests"] - 1
        clock.advance(30)
        recovered = manager.get_token()
    _table(
        say,
        [
            ("callers told to retry later", len(answers)),
            ("token requests during the cool-down", during),
            ("retry_after told to the first", f"{answers[0]:.1f} s"),
            ("after the cool-down", f"token {recovered.fingerprint}"),
        ],
    )


def run_demo(*, threads: int = 200, say: Say = print) -> int:
    """Run the demonstration, printing with ``say``; returns the exit code."""
    say("eightyeightpay demo: the 88Pay emulator on loopback over HTTPS, no configuration\n")
    with SandboxServer(Sandbox(), tls=True) as server:
        certificates = server.certificates
        assert certificates is not None
        _table(say, [("emulator", server.url), ("trusted CA", certificates.ca_file)])
        with TokenManager(
            DEFAULT_API_KEY,
            DEFAULT_MERCHANT_ID,
            base_url=server.url,
            ca_bundle=str(certificates.ca_file),
            store=MemoryStore(),
        ) as manager:
            say(f"\n1. {threads} threads ask for a token at once, cache cold (threaded manager)")
            fingerprints = _stampede(manager, threads)
            _table(
                say,
                [
                    ("token requests the emulator saw", server.sandbox.stats()["token_requests"]),
                    ("distinct tokens handed out", len(fingerprints)),
                ],
            )

            say("\n2. The cache serves every later call")
            calls = 100_000
            started = time.perf_counter()
            for _ in range(calls):
                manager.get_token()
            per_call = (time.perf_counter() - started) / calls
            _table(
                say,
                [
                    ("cached calls", f"{calls:,}"),
                    ("time per call", f"{per_call * 1e9:.0f} ns"),
                    ("token requests now", server.sandbox.stats()["token_requests"]),
                ],
            )

            say("\n3. A charge, authenticated with the cached token and its session")
            charge = manager.request(
                "POST",
                "/api/transactions/charges",
                json={
                    "flow": "PAYIN",
                    "method_code": "PSE",
                    "amount": 25000,
                    "currency": "COP",
                    "country": "COL",
                    "description": "eightyeightpay demo",
                    "notification_url": "https://merchant.example/webhooks/88pay",
                },
            )
            data = charge.data.get("data", {}) if isinstance(charge.data, dict) else {}
            _table(
                say,
                [
                    ("HTTP status", charge.status),
                    ("transaction", data.get("transaction_id")),
                    ("status", data.get("status")),
                ],
            )
            stats = server.sandbox.stats()

        say("\n4. What the emulator counted")
        _table(say, [(name, stats[name]) for name in sorted(stats)])

    say("\n5. Refresh ahead of expiry: a simulated hour (fake clock, in-process emulator)")
    _simulated_hour(say)
    say("\n6. A 429 from 88Pay: remembered and answered locally")
    _rate_limit(say)
    say("\nDone. With EIGHTY_EIGHT_PAY_* set, `eightyeightpay token` talks to the real API.")
    return 0
