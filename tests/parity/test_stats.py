"""stats() after a simulated hour tells what the sandbox saw, on every runtime.

One manager is used ten times a second for an hour of fake time, with an API call every
minute. Twice a noisy neighbour (another process with the same credentials and no shared
store) spends the merchant's minute, so the manager's next refresh gets a real 429 from the
emulator. The sandbox's counters minus the neighbour's own requests must then equal the
manager's stats(), figure by figure.
"""

from __future__ import annotations

import pytest

from eightyeightpay import Credentials, RateLimited, Stats
from eightyeightpay.plugins.sandbox import DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, Sandbox
from tests.parity.harness import RUNTIMES, Harness, run_scenario

BALANCE = f"/api/balance?id={DEFAULT_MERCHANT_ID}"
NEIGHBOUR_AT = (12_000, 24_000)  # ticks of 0.1 s: minutes 20 and 40


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_stats_after_a_simulated_hour_match_the_sandbox(runtime: str) -> None:
    neighbour = {"sent": 0, "ok": 0, "429": 0}
    refused: list[str] = []
    seen: dict[str, Stats] = {}
    request = Credentials(DEFAULT_API_KEY, DEFAULT_MERCHANT_ID).token_request()

    def spend_the_minute(h: Harness) -> None:
        while True:  # until the emulator refuses: the merchant's minute is spent
            reply = h.sandbox.handle(request, now=h.clock())
            assert reply.response is not None
            neighbour["sent"] += 1
            if reply.response.status == 429:
                neighbour["429"] += 1
                return
            neighbour["ok"] += 1

    async def scenario(h: Harness) -> None:
        for tick in range(36_000):
            h.clock.advance(0.1)
            if tick in NEIGHBOUR_AT:
                spend_the_minute(h)
            try:
                await h.get_token()
            except RateLimited as error:  # the 429, then its cool-down outlived the token
                refused.append(type(error).__name__)
            if tick % 50 == 0:
                await h.settle()
            if tick % 600 == 0:
                assert (await h.request("POST", BALANCE)).status == 200
        seen["stats"] = h.manager.stats()

    sandbox = Sandbox()
    run_scenario(runtime, scenario, sandbox=sandbox)
    served = sandbox.stats()
    stats = seen["stats"]
    assert neighbour["429"] == 2
    assert stats.token_requests == served["token_requests"] - neighbour["sent"]
    assert stats.outcome("ok") == served["tokens_issued"] - neighbour["ok"]
    assert stats.rate_limited == served["rate_limited"] - neighbour["429"] >= 1
    assert stats.outcome("rate_limited") == stats.rate_limited
    assert stats.token_requests == sum(count for _, count in stats.outcomes)
    assert stats.rejected_tokens == served["unauthorized"] == 0
    assert stats.failures_in_row == 0 and stats.store_mode == "local"
    assert 60 <= stats.hour_spent <= stats.token_requests
    assert stats.waited >= 1  # the first call, at least
