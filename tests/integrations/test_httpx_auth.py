"""EightyEightPayAuth with httpx over real TLS sockets against the loopback emulator:
httpx.Client, and httpx.AsyncClient under asyncio and under trio."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
import trio

from eightyeightpay.adapters.async_manager import AsyncTokenManager, open_trio_token_manager
from eightyeightpay.adapters.integrations.httpx_auth import EightyEightPayAuth
from eightyeightpay.adapters.sync import TokenManager
from eightyeightpay.plugins.sandbox import (
    DEFAULT_API_KEY,
    DEFAULT_MERCHANT_ID,
    Fault,
    SandboxServer,
)
from tests.integrations.support import BALANCE, CHARGE, CHARGES, stat, trust
from tests.support import https_options

# --------------------------------------------------------------------------- sync


def sync_client(server: SandboxServer, manager: TokenManager) -> httpx.Client:
    return httpx.Client(base_url=server.url, auth=EightyEightPayAuth(manager), verify=trust(server))


def test_sync_client_refuses_an_async_manager(https_server: SandboxServer) -> None:
    async def main() -> None:
        async with AsyncTokenManager(
            DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, **https_options(https_server)
        ) as manager:
            with (
                httpx.Client(
                    auth=EightyEightPayAuth(manager), verify=trust(https_server)
                ) as client,
                pytest.raises(TypeError, match="AsyncClient"),
            ):
                client.post(https_server.url + BALANCE)

    asyncio.run(main())
    assert stat(https_server, "api_requests") == 0


def test_no_secret_in_repr_or_errors(
    https_server: SandboxServer, https_manager: TokenManager
) -> None:
    auth = EightyEightPayAuth(https_manager)
    token = https_manager.get_token()
    texts = [repr(auth), str(auth)]
    https_server.sandbox.inject(Fault.reset(), path=CHARGES)
    with sync_client(https_server, https_manager) as client:
        attempts: list[Callable[[], object]] = [
            lambda: client.post(CHARGES, json=CHARGE),
            lambda: client.post("https://elsewhere.test/x"),
        ]
        for attempt in attempts:
            with pytest.raises(Exception) as caught:
                attempt()
            texts += [str(caught.value), repr(caught.value)]
    for text in texts:
        for secret in (DEFAULT_API_KEY, token.access_token, token.session_id):
            assert secret not in text


def test_the_constructor_takes_managers_only() -> None:
    with pytest.raises(TypeError):
        EightyEightPayAuth(object())  # type: ignore[arg-type]


def test_importing_the_library_imports_no_http_client() -> None:
    code = (
        "import sys, eightyeightpay, eightyeightpay.adapters.integrations; "
        "assert 'httpx' not in sys.modules and 'requests' not in sys.modules, sys.modules.keys()"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------- async

Scenario = Callable[[httpx.AsyncClient, SandboxServer], Awaitable[None]]


def run_async(runtime: str, server: SandboxServer, scenario: Scenario) -> None:
    """Run ``scenario`` with an AsyncClient whose auth uses the runtime's manager."""
    options = https_options(server)

    def manager() -> Any:
        if runtime == "asyncio":
            return AsyncTokenManager(DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, **options)
        return open_trio_token_manager(DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, **options)

    async def main() -> None:
        async with (
            manager() as opened,
            httpx.AsyncClient(
                base_url=server.url, auth=EightyEightPayAuth(opened), verify=trust(server)
            ) as client,
        ):
            await scenario(client, server)

    if runtime == "asyncio":
        asyncio.run(main())
    else:
        trio.run(main)


RUNTIMES = pytest.mark.parametrize("runtime", ["asyncio", "trio"])


@RUNTIMES
def test_async_headers_are_sent_and_accepted(runtime: str, https_server: SandboxServer) -> None:
    async def scenario(client: httpx.AsyncClient, server: SandboxServer) -> None:
        balance = await client.post(BALANCE)
        charge = await client.post(CHARGES, content=json.dumps(CHARGE).encode())
        assert balance.status_code == 200 and charge.status_code == 200
        sent = charge.request.headers
        assert sent["authorization"].startswith("Bearer ey") and sent["x-session-id"].startswith(
            "sess_"
        )
        assert sent["content-type"] == "application/json"

    run_async(runtime, https_server, scenario)
    assert stat(https_server, "token_requests") == 1
    assert stat(https_server, "charges") == 1


@RUNTIMES
def test_async_a_401_is_replayed_once_with_a_new_token(
    runtime: str, https_server: SandboxServer
) -> None:
    async def scenario(client: httpx.AsyncClient, server: SandboxServer) -> None:
        await client.post(BALANCE)
        assert stat(server, "token_requests") == 1
        server.sandbox.inject(Fault.status(401), path="/api/balance")
        response = await client.post(BALANCE)
        assert response.status_code == 200
        assert [r.status_code for r in response.history] == [401]
        assert stat(server, "api_requests") == 3
        assert stat(server, "token_requests") == 2

    run_async(runtime, https_server, scenario)


@RUNTIMES
def test_async_a_charge_rejected_with_401_is_replayed_with_its_body(
    runtime: str, https_server: SandboxServer
) -> None:
    async def scenario(client: httpx.AsyncClient, server: SandboxServer) -> None:
        server.sandbox.inject(Fault.status(401), path=CHARGES)
        response = await client.post(CHARGES, json=CHARGE)
        assert response.status_code == 200 and response.json()["data"]["amount"] == 25000

    run_async(runtime, https_server, scenario)
    assert stat(https_server, "api_requests") == 2
    assert stat(https_server, "token_requests") == 2
    assert stat(https_server, "charges") == 1


@RUNTIMES
def test_async_a_401_on_every_attempt_is_returned_after_one_replay(
    runtime: str, https_server: SandboxServer
) -> None:
    async def scenario(client: httpx.AsyncClient, server: SandboxServer) -> None:
        server.sandbox.inject(Fault.status(401), path="/api/balance", times=5)
        response = await client.post(BALANCE)
        assert response.status_code == 401 and len(response.history) == 1

    run_async(runtime, https_server, scenario)
    assert stat(https_server, "api_requests") == 2
    assert stat(https_server, "token_requests") == 2


@RUNTIMES
def test_async_a_reset_charge_raises_and_is_not_sent_again(
    runtime: str, https_server: SandboxServer
) -> None:
    async def scenario(client: httpx.AsyncClient, server: SandboxServer) -> None:
        server.sandbox.inject(Fault.reset(), path=CHARGES)
        with pytest.raises(httpx.TransportError):
            await client.post(CHARGES, json=CHARGE)

    run_async(runtime, https_server, scenario)
    assert stat(https_server, "api_requests") == 1
    assert stat(https_server, "charges") == 1


def test_async_client_refuses_a_sync_manager(
    https_server: SandboxServer, https_manager: TokenManager
) -> None:
    async def main() -> None:
        async with httpx.AsyncClient(
            auth=EightyEightPayAuth(https_manager), verify=trust(https_server)
        ) as client:
            with pytest.raises(TypeError, match="block the event loop"):
                await client.post(https_server.url + BALANCE)

    asyncio.run(main())
    assert stat(https_server, "token_requests") == 0
