"""A user's own test, as they would write it with the pytest plugin: their checkout code
against the emulator, covering token expiry and a 429 without sleeping."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
import trio

from eightyeightpay import Fault, RateLimited, TokenManager
from eightyeightpay.adapters.pytest_plugin import FakeWorld, SandboxInfo

CHARGE = {"flow": "PAYIN", "method_code": "PSE", "currency": "COP", "country": "COL"}


def checkout(payments: TokenManager, amount: int) -> str:
    """The user's code under test: create a PSE charge and return its transaction id."""
    response = payments.request(
        "POST",
        "/api/transactions/charges",
        json={
            "flow": "PAYIN",
            "method_code": "PSE",
            "amount": amount,
            "currency": "COP",
            "country": "COL",
        },
    )
    response_data = response.data
    assert response.ok, response.message
    return str(response_data["transaction_id"])


def test_checkout_keeps_working_across_token_expiry(eightyeightpay_fake: FakeWorld) -> None:
    payments = eightyeightpay_fake.manager()
    assert checkout(payments, 1000).startswith("txn_")
    eightyeightpay_fake.clock.advance(3 * 60)  # three token lifetimes, instantly
    assert checkout(payments, 2000).startswith("txn_")
    stats = eightyeightpay_fake.sandbox.stats()
    assert stats["token_requests"] == 2 and stats["expired_token_rejections"] == 0


def test_checkout_reports_a_rate_limit_and_recovers(eightyeightpay_fake: FakeWorld) -> None:
    payments = eightyeightpay_fake.manager()
    eightyeightpay_fake.rate_limit_next_token_request(retry_after=30)
    with pytest.raises(RateLimited) as limited:
        checkout(payments, 1000)
    assert limited.value.retry_after == pytest.approx(30)
    eightyeightpay_fake.clock.advance(31)
    assert checkout(payments, 1000).startswith("txn_")


def test_checkout_over_https(eightyeightpay_sandbox: SandboxInfo) -> None:
    with TokenManager(
        eightyeightpay_sandbox.api_key,
        eightyeightpay_sandbox.merchant_id,
        base_url=eightyeightpay_sandbox.url,
        ca_bundle=eightyeightpay_sandbox.ca_file,
    ) as payments:
        assert checkout(payments, 500).startswith("txn_")
    assert eightyeightpay_sandbox.sandbox.stats()["charges"] == 1


def test_the_plugin_is_registered_through_its_entry_point(pytestconfig: pytest.Config) -> None:
    plugin = pytestconfig.pluginmanager.get_plugin("eightyeightpay")
    assert plugin is not None and plugin.__name__ == "eightyeightpay.adapters.pytest_plugin"


async def charge_async(payments: Any, amount: int) -> int:
    charge = {**CHARGE, "amount": amount}
    response = await payments.request("POST", "/api/transactions/charges", json=charge)
    return int(response.status)


def test_asyncio_and_trio_managers_on_the_fake_clock_ride_out_a_retry_after(
    eightyeightpay_fake: FakeWorld,
) -> None:
    world = eightyeightpay_fake
    headers = {"Retry-After": "2"}

    async def on_asyncio() -> int:
        async with world.asyncio_manager() as payments:
            return await charge_async(payments, 1000)

    async def on_trio() -> int:
        async with world.trio_manager() as payments:
            return await charge_async(payments, 1000)

    runs: list[Callable[[], int]] = [lambda: asyncio.run(on_asyncio()), lambda: trio.run(on_trio)]
    for run in runs:
        world.sandbox.inject(Fault.status(429, headers=headers), path="/api/transactions/charges")
        start = world.clock()
        assert run() == 200  # the 429's Retry-After fits the deadline: waited on the fake clock
        assert world.clock() - start >= 2
    assert world.sandbox.stats()["charges"] == 2
