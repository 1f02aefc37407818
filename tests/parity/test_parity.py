"""The same scenarios, the same outcomes, on the threaded, asyncio and trio managers."""

from __future__ import annotations

import pytest

from eightyeightpay import (
    AccessDenied,
    ApiError,
    ApiRateLimited,
    ApiServerError,
    BadRequest,
    ConnectionLost,
    InvalidCredentials,
    MalformedResponse,
    NotFound,
    PermissionDenied,
    Policy,
    RateLimited,
    ServerError,
    Token,
    Unprocessable,
)
from eightyeightpay.plugins.sandbox import (
    DEFAULT_MERCHANT_ID,
    IP_BLOCKED_API_KEY,
    IP_BLOCKED_MERCHANT_ID,
    Fault,
    Sandbox,
)
from tests.parity.harness import RUNTIMES, Harness, run_scenario

BALANCE = f"/api/balance?id={DEFAULT_MERCHANT_ID}"
CHARGE = {"flow": "PAYIN", "method_code": "PSE", "amount": 10, "currency": "COP", "country": "COL"}
RATE_LIMITED_BODY = (
    b'{"status":"Error","code":429,"message":"Rate limit exceeded. Please try again later.",'
    b'"retry_after":20}'
)

pytestmark = pytest.mark.parametrize("runtime", RUNTIMES)


def test_simulated_hour_at_100_calls_a_second(runtime: str) -> None:
    """At most 74 token requests, no expired token, no 429, nobody waits after the first."""
    outcome: dict[str, int] = {}

    async def scenario(h: Harness) -> None:
        waited = unusable = 0
        for tick in range(360_000):
            h.clock.advance(0.01)
            before = h.stat("token_requests")
            previous = h.manager._slot.snapshot
            token = await h.get_token()
            if before and h.stat("token_requests") > before and token != previous:
                waited += 1
            unusable += h.clock() >= token.usable_until
            if tick % 50 == 0:
                await h.settle()
            if tick % 6000 == 0:
                assert (await h.request("POST", BALANCE)).status == 200
        outcome.update(waited=waited, unusable=unusable)

    sandbox = Sandbox()
    run_scenario(runtime, scenario, sandbox=sandbox)
    stats = sandbox.stats()
    assert 60 <= stats["token_requests"] <= 74  # 60 is the floor for 60 s tokens
    assert stats["rate_limited"] == 0
    assert stats["expired_token_rejections"] == 0 and stats["unauthorized"] == 0
    assert outcome == {"waited": 0, "unusable": 0}


def test_a_crowd_on_a_cold_cache_makes_one_request(runtime: str) -> None:
    async def scenario(h: Harness) -> None:
        results = await h.crowd(64)
        assert all(isinstance(r, Token) for r in results) and len(set(results)) == 1
        assert h.stat("token_requests") == 1

    run_scenario(runtime, scenario)


def test_credentials_rejected_once_and_not_retried(runtime: str) -> None:
    async def scenario(h: Harness) -> None:
        for _ in range(5):
            with pytest.raises(InvalidCredentials):
                await h.get_token()
        assert h.stat("token_requests") == 1

    run_scenario(runtime, scenario, api_key="sk_test_wrong_key_000000")


def test_access_denied_names_its_causes(runtime: str) -> None:
    async def scenario(h: Harness) -> None:
        with pytest.raises(AccessDenied, match="allow-list"):
            await h.get_token()

    run_scenario(runtime, scenario, api_key=IP_BLOCKED_API_KEY, merchant_id=IP_BLOCKED_MERCHANT_ID)


def test_429_cool_down_is_answered_locally(runtime: str) -> None:
    sandbox = Sandbox()
    sandbox.inject(Fault.status(429, body=RATE_LIMITED_BODY))

    async def scenario(h: Harness) -> None:
        with pytest.raises(RateLimited) as first:
            await h.get_token()
        assert first.value.retry_after == pytest.approx(20)
        for _ in range(50):
            h.clock.advance(0.2)
            with pytest.raises(RateLimited):
                await h.get_token(deadline=0)
        assert h.stat("token_requests") == 1
        h.clock.advance(11)
        assert isinstance(await h.get_token(), Token)
        assert h.stat("token_requests") == 2

    run_scenario(runtime, scenario, sandbox=sandbox)


def test_failed_refresh_then_recovery_after_backoff(runtime: str) -> None:
    sandbox = Sandbox()
    sandbox.inject(Fault.status(500))

    async def scenario(h: Harness) -> None:
        with pytest.raises(ServerError):
            await h.get_token(deadline=0)
        with pytest.raises(ServerError):
            await h.get_token(deadline=0)  # remembered during the backoff, no second request
        assert h.stat("token_requests") == 1
        h.clock.advance(1.0)
        assert isinstance(await h.get_token(deadline=0), Token)

    run_scenario(runtime, scenario, sandbox=sandbox)


def test_the_default_deadline_rides_out_two_500s_and_a_reset(runtime: str) -> None:
    sandbox = Sandbox()
    for fault in (Fault.status(500), Fault.status(500), Fault.reset()):
        sandbox.inject(fault)

    async def scenario(h: Harness) -> None:
        start = h.clock()
        assert isinstance(await h.get_token(), Token)
        assert h.stat("token_requests") == 4
        assert h.clock() - start <= Policy().deadline

    run_scenario(runtime, scenario, sandbox=sandbox)


def test_malformed_token_response_is_a_typed_error(runtime: str) -> None:
    sandbox = Sandbox()
    sandbox.inject(Fault.malformed(b'{"status":"Success","code":200,"data":{"expires_in":"60"}}'))

    async def scenario(h: Harness) -> None:
        with pytest.raises(MalformedResponse):
            await h.get_token(deadline=0)

    run_scenario(runtime, scenario, sandbox=sandbox)


def test_401_on_a_call_gets_one_new_token_and_one_replay(runtime: str) -> None:
    async def scenario(h: Harness) -> None:
        first = await h.get_token()
        h.manager.invalidate(first)  # nothing cached: the next call fetches a token
        token = await h.get_token()
        # make the API reject that token once: it expired on the server's side
        h.sandbox.inject(Fault.status(401), path="/api/balance")
        response = await h.request("POST", BALANCE)
        assert response.status == 200
        assert h.stat("token_requests") == 3
        assert await h.get_token() != token

    run_scenario(runtime, scenario)


def test_a_charge_that_may_have_arrived_is_never_replayed(runtime: str) -> None:
    async def scenario(h: Harness) -> None:
        await h.get_token()
        h.sandbox.inject(Fault.reset(), path="/api/transactions/charges")
        with pytest.raises(ConnectionLost):
            await h.request("POST", "/api/transactions/charges", json=CHARGE)
        assert h.stat("api_requests") == 1

    run_scenario(runtime, scenario)


CHARGES = "/api/transactions/charges"


def test_a_charge_answered_503_is_never_sent_twice(runtime: str) -> None:
    async def scenario(h: Harness) -> None:
        h.sandbox.inject(Fault.status(503), path=CHARGES)
        with pytest.raises(ApiServerError) as caught:
            await h.request("POST", CHARGES, json=CHARGE)
        error = caught.value
        assert error.status == 503 and error.may_have_been_processed
        assert error.failed_request == f"POST {CHARGES}" and "not sent again" in str(error)
        assert h.stat("api_requests") == 1

    run_scenario(runtime, scenario)


def test_a_charge_processed_then_answered_503_is_never_sent_twice(runtime: str) -> None:
    async def scenario(h: Harness) -> None:
        h.sandbox.inject(Fault.processed_then(503), path=CHARGES)
        with pytest.raises(ApiServerError) as caught:
            await h.request("POST", CHARGES, json=CHARGE)
        assert caught.value.may_have_been_processed
        assert h.stat("api_requests") == 1
        assert h.stat("charges") == 1  # it was processed, once

    run_scenario(runtime, scenario)


@pytest.mark.parametrize("over_http", [True, False])
def test_a_charge_answered_with_a_body_past_the_cap_may_have_been_processed(
    runtime: str, over_http: bool
) -> None:
    async def scenario(h: Harness) -> None:
        await h.get_token()
        h.sandbox.inject(Fault.malformed(b" " * (5 * 1024 * 1024)), path=CHARGES)
        with pytest.raises(MalformedResponse) as caught:
            await h.request("POST", CHARGES, json=CHARGE)
        error = caught.value
        assert error.status == 200 and error.may_have_been_processed  # 88Pay answered it
        assert error.failed_request == f"POST {CHARGES}"
        assert h.stat("api_requests") == 1

    run_scenario(runtime, scenario, over_http=over_http)  # the network's and the sandbox's


def test_a_balance_answered_503_once_is_retried_and_returns_200(runtime: str) -> None:
    async def scenario(h: Harness) -> None:
        h.sandbox.inject(Fault.status(503), path="/api/balance")
        response = await h.request("POST", BALANCE)
        assert response.status == 200
        assert h.stat("api_requests") == 2

    run_scenario(runtime, scenario)


def test_a_burst_of_100_api_calls_sends_60_and_answers_the_rest_locally(runtime: str) -> None:
    async def scenario(h: Harness) -> None:
        refused = 0
        for _ in range(100):
            try:
                await h.request("POST", BALANCE, deadline=0)
            except ApiRateLimited as error:
                assert error.local and error.status is None and error.retry_after > 0
                refused += 1
            h.clock.advance(0.5)  # 100 calls in 50 s
        assert refused == 40
        assert h.stat("api_requests") == 60
        assert h.stat("rate_limited") == 0  # the emulator never answered 429

    run_scenario(runtime, scenario)


@pytest.mark.parametrize(
    ("status", "kind"),
    [(400, BadRequest), (404, NotFound), (403, PermissionDenied), (422, Unprocessable)],
)
def test_api_error_statuses_raise_their_typed_errors(
    runtime: str, status: int, kind: type[ApiError]
) -> None:
    async def scenario(h: Harness) -> None:
        h.sandbox.inject(Fault.status(status), path=CHARGES)
        with pytest.raises(kind) as caught:
            await h.request("POST", CHARGES, json=CHARGE)
        assert caught.value.status == status and not caught.value.may_have_been_processed
        assert h.stat("api_requests") == 1

    run_scenario(runtime, scenario)
