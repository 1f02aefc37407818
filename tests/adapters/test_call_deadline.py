"""A call's deadline bounds the whole call on threads, asyncio and trio, against real servers.

An API call whose server hangs ends at the call's deadline, not at the manager's 30 s
``timeout``; ``deadline=0`` still gives its one attempt the whole timeout. A token request
dripped slowly by a raw server goes on after an impatient caller gave up at its deadline:
the patient caller gets its token from that same request (the server saw one connection).
Times are checked as behaviour ("before the answer came", "well before the timeout"),
never as speed.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from eightyeightpay import (
    DEFAULT_API_KEY,
    DEFAULT_MERCHANT_ID,
    AsyncTokenManager,
    DeadlineExceeded,
    EightyEightPayError,
    Fault,
    RequestTimeout,
    SandboxServer,
    Token,
    TokenManager,
    open_trio_token_manager,
)
from eightyeightpay.plugins.memory import MemoryStore
from eightyeightpay.plugins.sandbox import TestCertificates, make_test_ca
from tests.reliability.rawserver import RawServer, drip
from tests.reliability.test_fault_matrix import token_response
from tests.support import https_options

RUNTIMES = ("sync", "asyncio", "trio")
CHARGES = "/api/transactions/charges"
CHARGE = {"flow": "PAYIN", "method_code": "PSE", "amount": 1, "currency": "COP", "country": "COL"}
HANG = 20.0
"""Seconds the server holds an API call's answer: beyond any deadline used here."""
CALL_TIMEOUT = 30.0
"""The managers' default API-call timeout, which a deadline must cut."""

Outcome = Any
"""What a call returned, or the EightyEightPayError it raised."""


class Calls:
    """A manager's calls made alike on every runtime, each timed by the monotonic clock."""

    def __init__(
        self,
        get_token: Callable[[float | None], Awaitable[Token]],
        request: Callable[..., Awaitable[Any]],
        together: Callable[[list[Callable[[], Awaitable[Outcome]]]], Awaitable[list[Outcome]]],
    ) -> None:
        self.get_token = get_token
        self.request = request
        self.together = together
        """Run calls concurrently, the n-th started 0.1 s after the one before."""

    @staticmethod
    async def timed(call: Callable[[], Awaitable[Any]]) -> tuple[Outcome, float, float]:
        """(outcome, started, ended) of ``call``."""
        started = time.monotonic()
        try:
            outcome: Outcome = await call()
        except EightyEightPayError as error:
            outcome = error
        return outcome, started, time.monotonic()


Body = Callable[[Calls], Awaitable[Any]]


def run(runtime: str, options: dict[str, Any], body: Body) -> Any:
    """Run ``body`` against a new manager on ``runtime``."""
    key, merchant = DEFAULT_API_KEY, DEFAULT_MERCHANT_ID
    if runtime == "sync":

        async def sync_body() -> Any:
            with TokenManager(key, merchant, **options) as manager:
                return await body(
                    Calls(
                        lambda d: asyncio.to_thread(manager.get_token, deadline=d),
                        lambda *a, **k: asyncio.to_thread(manager.request, *a, **k),
                        _gather,
                    )
                )

        return asyncio.run(sync_body())
    if runtime == "asyncio":

        async def asyncio_body() -> Any:
            async with AsyncTokenManager(key, merchant, **options) as manager:
                calls = Calls(lambda d: manager.get_token(deadline=d), manager.request, _gather)
                return await body(calls)

        return asyncio.run(asyncio_body())

    async def trio_body() -> Any:
        async with open_trio_token_manager(key, merchant, **options) as manager:
            calls = Calls(lambda d: manager.get_token(deadline=d), manager.request, _nursery)
            return await body(calls)

    return trio.run(trio_body)


async def _gather(calls: list[Callable[[], Awaitable[Outcome]]]) -> list[Outcome]:
    async def later(n: int, call: Callable[[], Awaitable[Outcome]]) -> Outcome:
        await asyncio.sleep(0.1 * n)
        return await call()

    return list(await asyncio.gather(*(later(n, c) for n, c in enumerate(calls))))


async def _nursery(calls: list[Callable[[], Awaitable[Outcome]]]) -> list[Outcome]:
    results: list[Outcome] = [None] * len(calls)

    async def later(n: int, call: Callable[[], Awaitable[Outcome]]) -> None:
        await trio.sleep(0.1 * n)
        results[n] = await call()

    async with trio.open_nursery() as nursery:
        for n, call in enumerate(calls):
            nursery.start_soon(later, n, call)
    return results


# --------------------------------------------------------------------------- API calls


@pytest.fixture
def server() -> Iterator[SandboxServer]:
    with SandboxServer(tls=True) as server:
        yield server


def hang_next_charge(server: SandboxServer) -> None:
    server.sandbox.inject(Fault.latency(HANG), path=CHARGES)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_charge_ends_at_its_deadline_not_at_the_call_timeout(
    server: SandboxServer, runtime: str
) -> None:
    async def body(calls: Calls) -> tuple[Outcome, float, float]:
        await calls.get_token(None)
        hang_next_charge(server)
        return await Calls.timed(lambda: calls.request("POST", CHARGES, json=CHARGE, deadline=1.0))

    options = {**https_options(server), "timeout": CALL_TIMEOUT}
    error, started, ended = run(runtime, options, body)
    # Sent, then cut at the deadline: it may have been processed and is never sent again.
    assert isinstance(error, RequestTimeout) and error.may_have_been_sent, error
    assert error.failed_request == f"POST {CHARGES}"
    assert ended - started < 10.0  # the 30 s call timeout would have held it 30 s
    assert server.sandbox.stats()["api_requests"] == 1


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_deadline_zero_gives_its_one_call_the_whole_timeout(
    server: SandboxServer, runtime: str
) -> None:
    timeout = 1.5

    async def body(calls: Calls) -> tuple[Outcome, float, float]:
        await calls.get_token(None)
        hang_next_charge(server)
        return await Calls.timed(lambda: calls.request("POST", CHARGES, json=CHARGE, deadline=0))

    error, started, ended = run(runtime, {**https_options(server), "timeout": timeout}, body)
    assert isinstance(error, RequestTimeout) and error.may_have_been_sent, error
    assert not isinstance(error, DeadlineExceeded)
    assert ended - started >= timeout * 0.9  # its whole timeout, not cut to "no time left"
    assert server.sandbox.stats()["api_requests"] == 1


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_call_whose_token_wait_ate_its_deadline_is_not_sent(
    server: SandboxServer, runtime: str
) -> None:
    server.sandbox.inject(Fault.latency(3.0))  # the token request's answer

    async def body(calls: Calls) -> tuple[Outcome, float, float]:
        return await Calls.timed(lambda: calls.request("POST", CHARGES, json=CHARGE, deadline=1.0))

    error, started, ended = run(runtime, https_options(server), body)
    assert isinstance(error, DeadlineExceeded) and error.failed_request == "token request"
    assert "the call itself was not processed" in str(error)
    assert ended - started < 3.0  # it stopped waiting before the token's answer came
    assert server.sandbox.stats()["api_requests"] == 0


# --------------------------------------------------------------------------- token requests

DRIP_INTERVAL = 0.05
DRIP_SECONDS = 2.0
"""The token response's body drips for about this long (each pause far below any timeout)."""


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> TestCertificates:
    return make_test_ca(tmp_path_factory.mktemp("call-deadline"))


@pytest.fixture
def dripping(certificates: TestCertificates) -> Iterator[tuple[RawServer, threading.Event]]:
    data = token_response()
    head_end = data.index(b"\r\n\r\n") + 4
    step = max(1, int((len(data) - head_end) * DRIP_INTERVAL / DRIP_SECONDS))
    ended = threading.Event()
    behaviour = drip(
        data, start=head_end, stop=len(data), interval=DRIP_INTERVAL, step=step, ended=ended
    )
    with RawServer(behaviour, certificates.server_context()) as server:
        yield server, ended


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_an_impatient_caller_gives_up_and_the_shared_request_goes_on_for_the_others(
    dripping: tuple[RawServer, threading.Event], certificates: TestCertificates, runtime: str
) -> None:
    server, drip_ended = dripping
    options = {
        "base_url": server.url,
        "ca_bundle": str(Path(certificates.ca_file)),
        "store": MemoryStore(),
    }
    seen_at_give_up: list[bool] = []

    async def body(calls: Calls) -> list[Outcome]:
        async def impatient() -> Outcome:  # starts the token request, then gives up
            outcome = await Calls.timed(lambda: calls.get_token(0.5))
            seen_at_give_up.append(drip_ended.is_set())
            return outcome

        async def patient() -> Outcome:  # joins the same request 0.1 s later
            return await Calls.timed(lambda: calls.get_token(10.0))

        return await calls.together([impatient, patient])

    (gave_up, _, gave_up_at), (token, _, got_at) = run(runtime, options, body)
    assert isinstance(gave_up, DeadlineExceeded) and gave_up.may_have_been_sent, gave_up
    assert gave_up.retry_after > 0
    assert seen_at_give_up == [False]  # it left while the answer was still dripping
    assert isinstance(token, Token), token
    assert gave_up_at < got_at
    assert server.connections == 1  # one request, not cut short and not sent again
