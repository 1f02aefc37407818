"""A caller queued for a pooled connection never sends with too little time left.

It waits for a connection for ``QUEUE_SHARE`` of its timeout at most; past that the attempt
ends as never sent, and ``request()`` sends it again within the call's deadline, with a whole
timeout for the answer. Without the limit, a charge that queued behind a slow call took the
connection that came back and went out with milliseconds left: the server created it, and
its caller was told it may have been sent (a charge to look up before trying again).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import trio

from eightyeightpay import (
    DEFAULT_API_KEY,
    DEFAULT_MERCHANT_ID,
    ApiResponse,
    AsyncTokenManager,
    Fault,
    FaultKind,
    RequestTimeout,
    SandboxServer,
    TokenManager,
    open_trio_token_manager,
)
from tests.support import https_options

CHARGE = {"flow": "PAYIN", "method_code": "PSE", "amount": 1, "currency": "COP", "country": "COL"}
TIMEOUT = 1.0
SLOW = 1.6  # the first charge's answer comes after its caller's timeout


@pytest.fixture
def server() -> Iterator[SandboxServer]:
    with SandboxServer(tls=True) as server:
        yield server


def options(server: SandboxServer) -> dict[str, Any]:
    return {**https_options(server), "timeout": TIMEOUT}


def slow_first_charge(server: SandboxServer) -> None:
    # The first charge is answered after its caller's timeout; the next takes 0.3 s, which a
    # charge sent with a few milliseconds left would not wait for.
    server.sandbox.inject(Fault(FaultKind.LATENCY, seconds=SLOW), path="/api/transactions/charges")
    server.sandbox.inject(Fault(FaultKind.LATENCY, seconds=0.3), path="/api/transactions/charges")


def settle(server: SandboxServer) -> int:
    time.sleep(SLOW + 0.5)  # let the slow charge finish at the server
    return int(server.sandbox.stats()["charges"])


@contextlib.contextmanager
def one_connection(server: SandboxServer) -> Iterator[TokenManager]:
    """A threaded manager with one connection and a token; the next charge is slow."""
    with TokenManager(
        DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, max_connections=1, **options(server)
    ) as manager:
        manager.get_token()
        slow_first_charge(server)
        yield manager


@contextlib.asynccontextmanager
async def one_async_connection(server: SandboxServer, opener: Any) -> AsyncIterator[Any]:
    """:func:`one_connection` for an async manager ``opener`` makes."""
    async with opener(
        DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, max_connections=1, **options(server)
    ) as manager:
        await manager.get_token()
        slow_first_charge(server)
        yield manager


def test_threads(server: SandboxServer) -> None:
    with one_connection(server) as manager:
        outcomes: dict[str, object] = {}

        def charge(name: str) -> None:
            outcomes[name] = outcome(
                lambda: manager.request("POST", "/api/transactions/charges", json=CHARGE)
            )

        first = threading.Thread(target=charge, args=("slow",))
        first.start()
        time.sleep(0.05)  # the first holds the only connection; the second queues
        second = threading.Thread(target=charge, args=("queued",))
        second.start()
        first.join(10)
        second.join(10)
    check(outcomes, server)


def outcome(call: Callable[[], ApiResponse]) -> object:
    try:
        return call().status
    except RequestTimeout as error:
        return f"timeout, may have been sent: {error.may_have_been_sent}"


def check(outcomes: dict[str, object], server: SandboxServer) -> None:
    assert outcomes == {
        "slow": "timeout, may have been sent: True",  # sent; its answer came after its timeout
        "queued": 200,  # gave up waiting before sending, then sent with a whole timeout
    }
    assert settle(server) == 2


def test_asyncio(server: SandboxServer) -> None:
    async def main() -> dict[str, object]:
        async with one_async_connection(server, AsyncTokenManager) as manager:

            async def charge(delay: float) -> object:
                await asyncio.sleep(delay)
                try:
                    answer = await manager.request("POST", "/api/transactions/charges", json=CHARGE)
                except RequestTimeout as error:
                    return f"timeout, may have been sent: {error.may_have_been_sent}"
                return answer.status

            slow, queued = await asyncio.gather(charge(0), charge(0.05))
            return {"slow": slow, "queued": queued}

    check(asyncio.run(main()), server)


def test_trio(server: SandboxServer) -> None:
    outcomes: dict[str, object] = {}

    async def main() -> None:
        async with one_async_connection(server, open_trio_token_manager) as manager:

            async def charge(name: str, delay: float) -> None:
                await trio.sleep(delay)
                try:
                    answer = await manager.request("POST", "/api/transactions/charges", json=CHARGE)
                except RequestTimeout as error:
                    outcomes[name] = f"timeout, may have been sent: {error.may_have_been_sent}"
                else:
                    outcomes[name] = answer.status

            async with trio.open_nursery() as nursery:
                nursery.start_soon(charge, "slow", 0)
                nursery.start_soon(charge, "queued", 0.05)

    trio.run(main)
    check(outcomes, server)


def test_max_connections_with_a_transport_of_ones_own_is_refused(server: SandboxServer) -> None:
    from eightyeightpay import ConfigurationError
    from eightyeightpay.plugins.urllib3_transport import Urllib3Transport

    with pytest.raises(ConfigurationError, match="set the cap on that transport"):
        TokenManager(
            DEFAULT_API_KEY,
            DEFAULT_MERCHANT_ID,
            max_connections=2,
            transport=Urllib3Transport(),
            **options(server),
        )


def no_connection_came_free(error: RequestTimeout) -> str:
    assert error.pool_cap == 1 and not error.may_have_been_sent
    assert "came free" in str(error) and "max_connections" in str(error)
    assert f"within {TIMEOUT / 2:.2f} s" in str(error)  # its wait: half the attempt's timeout
    return "no connection came free"


def test_threads_a_call_that_found_no_connection_free_says_so(server: SandboxServer) -> None:
    with one_connection(server) as manager:
        first = threading.Thread(
            target=outcome,
            args=(lambda: manager.request("POST", "/api/transactions/charges", json=CHARGE),),
        )
        first.start()
        time.sleep(0.05)  # the first holds the only connection past the second's patience
        with pytest.raises(RequestTimeout) as caught:
            manager.request("POST", "/api/transactions/charges", json=CHARGE, deadline=0)
        first.join(10)
    assert no_connection_came_free(caught.value)
    assert settle(server) == 1  # only the first was sent


def test_asyncio_a_call_that_found_no_connection_free_says_so(server: SandboxServer) -> None:
    async def main() -> RequestTimeout:
        async with one_async_connection(server, AsyncTokenManager) as manager:

            async def charge(deadline: float | None) -> object:
                try:
                    return await manager.request(
                        "POST", "/api/transactions/charges", json=CHARGE, deadline=deadline
                    )
                except RequestTimeout as error:
                    return error

            first = asyncio.create_task(charge(None))
            await asyncio.sleep(0.05)
            second = await charge(0)
            await first
            assert isinstance(second, RequestTimeout)
            return second

    assert no_connection_came_free(asyncio.run(main()))
    assert settle(server) == 1
