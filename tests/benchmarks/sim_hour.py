"""A simulated hour at steady load on a fake clock against the in-process emulator.

Every contender is called ``rate`` times a simulated second for 3,600 s. Counted: token
requests and 429s the emulator saw, calls answered with a token past its ``exp``, calls
that failed, and calls that sent a token request themselves (waited on the network).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import Callable

import trio

from eightyeightpay.credentials import SANDBOX_URL
from eightyeightpay.plugins.sandbox import (
    DEFAULT_API_KEY,
    DEFAULT_MERCHANT_ID,
    FakeClock,
    Sandbox,
    SandboxTransport,
)
from tests.parity.harness import open_harness

from .baseline import (
    GoogleClock,
    SimulatedReferenceCache,
    botocore_credentials,
    google_credentials,
    sandbox_fetcher,
)
from .common import Figures

HOUR = 3600.0
_exp_cache: dict[str, float] = {}


def _exp(access_token: str) -> float:
    exp = _exp_cache.get(access_token)
    if exp is None:
        payload = access_token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        exp = _exp_cache[access_token] = float(claims["exp"])
    return exp


class Tally:
    """What one contender's hour cost."""

    def __init__(self, sandbox: Sandbox, clock: FakeClock) -> None:
        self.sandbox, self.clock = sandbox, clock
        self.calls = self.failed = self.expired_used = self.waited = self.waited_after_first = 0

    def requests(self) -> int:
        return self.sandbox.stats()["token_requests"]

    def saw(self, access_token: str | None, before: int) -> None:
        self.calls += 1
        if access_token is None:
            self.failed += 1
        elif self.clock() >= _exp(access_token):
            self.expired_used += 1
        if self.requests() > before:
            self.waited += 1
            self.waited_after_first += self.calls > 1

    def figures(self) -> Figures:
        stats = self.sandbox.stats()
        return {
            "token_requests": stats["token_requests"],
            "rate_limited_429": stats["rate_limited"],
            "expired_tokens_used": self.expired_used,
            "callers_waited_on_network": self.waited,
            "callers_waited_after_first_token": self.waited_after_first,
            "calls_failed": self.failed,
            "calls": self.calls,
        }


def _sync_hour(get: Callable[[], str], tally: Tally, rate: int) -> Figures:
    for _ in range(int(HOUR * rate)):
        tally.clock.advance(1.0 / rate)
        before = tally.requests()
        try:
            token: str | None = get()
        except Exception:
            token = None
        tally.saw(token, before)
    return tally.figures()


def reference(rate: int) -> Figures:
    """88Pay's reference pattern."""
    clock, sandbox = FakeClock(), Sandbox()
    cache = SimulatedReferenceCache(
        sandbox_fetcher(SandboxTransport(sandbox, clock), SANDBOX_URL), clock
    )
    return _sync_hour(lambda: str(cache.get()["access_token"]), Tally(sandbox, clock), rate)


def botocore_windows(rate: int) -> Figures:
    """botocore's RefreshableCredentials (15 min advisory, 10 min mandatory) on 60 s tokens."""
    logging.getLogger("botocore").setLevel(logging.CRITICAL)  # one warning per failed refresh
    clock, sandbox = FakeClock(), Sandbox()
    fetch = sandbox_fetcher(SandboxTransport(sandbox, clock), SANDBOX_URL)
    tally = Tally(sandbox, clock)
    before = tally.requests()
    credentials = botocore_credentials(fetch, clock)  # the first token, fetched at creation
    tally.saw(credentials.get_frozen_credentials().token, before)
    return _sync_hour(lambda: str(credentials.get_frozen_credentials().token), tally, rate)


def google_windows(rate: int) -> Figures:
    """google-auth's Credentials (refresh 3 min 45 s before expiry) on 60 s tokens."""
    clock, sandbox = FakeClock(), Sandbox()
    credentials = google_credentials(
        sandbox_fetcher(SandboxTransport(sandbox, clock), SANDBOX_URL), clock
    )
    url = SANDBOX_URL + "/api/balance"

    def get() -> str:
        headers: dict[str, str] = {}
        credentials.before_request(None, "POST", url, headers)
        return headers["authorization"].removeprefix("Bearer ")

    with GoogleClock(clock):
        return _sync_hour(get, Tally(sandbox, clock), rate)


def ours(runtime: str, rate: int) -> Figures:
    """eightyeightpay on ``runtime``; background refreshes run every half simulated second."""
    clock, sandbox = FakeClock(), Sandbox()
    tally = Tally(sandbox, clock)
    settle_every = max(1, rate // 2)

    async def main() -> None:
        async with open_harness(
            runtime, sandbox, clock, DEFAULT_API_KEY, DEFAULT_MERCHANT_ID
        ) as harness:
            for tick in range(int(HOUR * rate)):
                clock.advance(1.0 / rate)
                before = tally.requests()
                try:
                    token: str | None = (await harness.get_token()).access_token
                except Exception:
                    token = None
                tally.saw(token, before)
                if tick % settle_every == 0:
                    await harness.settle()

    if runtime == "trio":
        trio.run(main)
    else:
        asyncio.run(main())
    return tally.figures()


def run(quick: bool) -> Figures:
    """Every contender's simulated hour."""
    rate = 5 if quick else 20
    figures: Figures = {"calls_per_second": rate}
    for runtime in ("sync", "asyncio", "trio"):
        figures[f"eightyeightpay ({'threads' if runtime == 'sync' else runtime})"] = ours(
            runtime, rate
        )
    figures["reference pattern"] = reference(rate)
    figures["botocore windows"] = botocore_windows(rate)
    figures["google-auth windows"] = google_windows(rate)
    return figures


def _main() -> None:
    print(json.dumps(run(True), indent=1))


if __name__ == "__main__":
    _main()
