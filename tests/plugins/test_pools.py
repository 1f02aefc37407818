"""Connection pools: one per process and host, capped, fork-safe, loop-safe.

The emulator runs in its own process, so that a fork of the test process copies no server
thread; its tokens last an hour and its rate limits are out of reach, so that thousands of
charges (and a token for each of 1,000 managers) are answered on a loaded machine.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import trio

from eightyeightpay import AsyncTokenManager, MemoryStore, TokenManager
from eightyeightpay.http import HttpRequest, HttpResponse
from eightyeightpay.plugins.h11_transport import AsyncHttp11Transport
from eightyeightpay.plugins.runtimes import AsyncioRuntime, TrioRuntime
from eightyeightpay.plugins.sandbox import DEFAULT_API_KEY, DEFAULT_MERCHANT_ID
from eightyeightpay.plugins.tls import PoolStats
from eightyeightpay.plugins.urllib3_transport import (
    WATCHDOG_THREAD,
    Urllib3Transport,
    process_pools,
)
from eightyeightpay.tokens import Token
from tests.benchmarks.serve import emulator_process


@pytest.fixture(scope="module")
def sandbox() -> Iterator[dict[str, Any]]:
    with emulator_process() as info:
        yield info


@pytest.fixture
def token(sandbox: dict[str, Any]) -> Token:
    with TokenManager(
        DEFAULT_API_KEY,
        DEFAULT_MERCHANT_ID,
        base_url=sandbox["url"],
        ca_bundle=sandbox["ca_file"],
        store=MemoryStore(),
    ) as manager:
        return manager.get_token()


def charge(url: str, token: Token, amount: int) -> HttpRequest:
    body = {"flow": "PAYIN", "method_code": "PSE", "amount": amount, "currency": "COP"}
    body["country"] = "COL"
    data = json.dumps(body).encode()
    headers = (("Content-Type", "application/json"), ("Content-Length", str(len(data))))
    return HttpRequest(
        "POST", f"{url}/api/transactions/charges", (*token.auth_headers(), *headers), data
    )


def amount_of(response: HttpResponse) -> int:
    """The amount of the charge ``response`` created (it must be a 200)."""
    assert response.status == 200, response.body
    return int(json.loads(response.body)["data"]["amount"])


def charged(transport: Urllib3Transport, url: str, token: Token, amount: int) -> int:
    return amount_of(transport.send(charge(url, token, amount), timeout=10.0))


def test_after_a_fork_parent_and_child_never_receive_each_others_charge(
    sandbox: dict[str, Any], token: Token
) -> None:
    url = sandbox["url"]
    transport = Urllib3Transport(ca_bundle=sandbox["ca_file"])
    try:
        assert charged(transport, url, token, 1) == 1  # a kept-alive connection is pooled
        (stats,) = transport.pool_stats().values()
        assert (stats.opened, stats.idle) == (1, 1)
        crossed = 0
        for round_ in range(1000):
            mine, theirs = 2 * round_ + 3, 2 * round_ + 4
            pid = os.fork()
            if pid == 0:  # the child: charge `theirs` at once with the parent
                status = 1
                try:
                    answered = charged(transport, url, token, theirs)
                    (child_stats,) = transport.pool_stats().values()
                    # nothing of the parent's pool was used: the child opened its own
                    status = 0 if (answered, child_stats.opened) == (theirs, 1) else 2
                finally:
                    os._exit(status)
            answered = charged(transport, url, token, mine)
            _, status = os.waitpid(pid, 0)
            crossed += answered != mine or os.waitstatus_to_exitcode(status) != 0
        assert crossed == 0
        # The child never closed or shut down the parent's session: the parent still talks
        # on the connection it opened before the first fork.
        (stats,) = transport.pool_stats().values()
        assert stats.opened == 1
    finally:
        transport.close()


def test_one_pool_per_host_is_shared_by_every_transport_and_bounds_connections_in_use(
    sandbox: dict[str, Any], token: Token
) -> None:
    url = sandbox["url"]
    ca_file = sandbox["ca_file"]
    transports = [Urllib3Transport(ca_bundle=ca_file, max_connections=4) for _ in range(50)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(32)

    def caller(index: int) -> None:
        barrier.wait()
        try:
            for call in range(10):
                amount = index * 100 + call + 1
                assert charged(transports[(index * 10 + call) % 50], url, token, amount) == amount
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=caller, args=(index,)) for index in range(32)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert errors == []
        stats = process_pools()[url]
        assert all(t.pool_stats() == {url: stats} for t in transports)  # one shared pool
        assert stats.cap == 4
        assert stats.opened <= 4  # 320 calls from 32 threads on at most 4 connections
        assert stats.queued > 0
        watchdogs = [t for t in threading.enumerate() if t.name == WATCHDOG_THREAD]
        assert len(watchdogs) == 1
    finally:
        for transport in transports:
            transport.close()
    assert url not in process_pools()  # the last transport closed the pool


def _switches(thread: threading.Thread) -> int:
    with open(f"/proc/self/task/{thread.native_id}/status") as status:
        for line in status:
            if line.startswith("voluntary_ctxt_switches:"):
                return int(line.split()[1])
    raise AssertionError("no context-switch count")


def test_the_watchdog_sleeps_through_calls_whose_deadline_is_not_the_earliest(
    sandbox: dict[str, Any], token: Token
) -> None:
    url = sandbox["url"]
    transport = Urllib3Transport(ca_bundle=sandbox["ca_file"])
    try:
        assert charged(transport, url, token, 1) == 1
        (watchdog,) = [t for t in threading.enumerate() if t.name == WATCHDOG_THREAD]
        before = _switches(watchdog)
        for amount in range(2, 302):
            assert charged(transport, url, token, amount) == amount
        # Each call arms a deadline later than one already pending: no wake-up is owed.
        # (Arming used to notify the thread every time: one switch per call or more.)
        assert _switches(watchdog) - before <= 3
    finally:
        transport.close()


def test_the_watchdog_thread_ends_when_the_last_transport_closes(
    sandbox: dict[str, Any], token: Token
) -> None:
    transport = Urllib3Transport(ca_bundle=sandbox["ca_file"])
    assert charged(transport, sandbox["url"], token, 5) == 5
    (watchdog,) = [t for t in threading.enumerate() if t.name == WATCHDOG_THREAD]
    transport.close()
    watchdog.join(timeout=10)
    assert not watchdog.is_alive()


# --------------------------------------------------------------------------- async pools


async def acharged(transport: AsyncHttp11Transport, url: str, token: Token, amount: int) -> int:
    return amount_of(await transport.send(charge(url, token, amount), timeout=10.0))


def test_asyncio_callers_beyond_the_cap_queue_and_share_the_loops_pool(
    sandbox: dict[str, Any], token: Token
) -> None:
    url = sandbox["url"]

    async def main() -> tuple[list[int], list[dict[str, PoolStats]]]:
        ca_file = sandbox["ca_file"]
        transports = [
            AsyncHttp11Transport(AsyncioRuntime(), ca_bundle=ca_file, max_connections=5)
            for _ in range(20)
        ]
        try:
            answers = await asyncio.gather(
                *(acharged(transports[n % 20], url, token, n + 1) for n in range(1000))
            )
            return answers, [t.pool_stats() for t in transports]
        finally:
            for transport in transports:
                await transport.aclose()

    answers, stats = asyncio.run(main())
    assert answers == list(range(1, 1001))
    (pool,) = stats[0].values()
    assert all(s == {url: pool} for s in stats)  # one pool for the loop and host
    assert pool.opened <= 5 and pool.queued > 0


def test_trio_callers_beyond_the_cap_queue(sandbox: dict[str, Any], token: Token) -> None:
    url = sandbox["url"]

    async def main() -> tuple[list[int], PoolStats]:
        answers: list[int] = []
        async with trio.open_nursery() as nursery:
            transport = AsyncHttp11Transport(
                TrioRuntime(nursery), ca_bundle=sandbox["ca_file"], max_connections=3
            )

            async def one(amount: int) -> None:
                answers.append(await acharged(transport, url, token, amount))

            async with trio.open_nursery() as callers:
                for amount in range(1, 201):
                    callers.start_soon(one, amount)
            (stats,) = transport.pool_stats().values()
            await transport.aclose()
        return sorted(answers), stats

    answers, stats = trio.run(main)
    assert answers == list(range(1, 201))
    assert stats.opened <= 3 and stats.queued > 0


def test_a_manager_under_successive_event_loops_uses_each_loops_own_connections(
    sandbox: dict[str, Any],
) -> None:
    sandbox_stats: list[dict[str, PoolStats]] = []
    manager = AsyncTokenManager(
        DEFAULT_API_KEY,
        DEFAULT_MERCHANT_ID,
        base_url=sandbox["url"],
        ca_bundle=sandbox["ca_file"],
        store=MemoryStore(),
    )
    body = {"flow": "PAYIN", "method_code": "PSE", "amount": 7, "currency": "COP", "country": "COL"}

    async def charge_once() -> int:
        response = await manager.request("POST", "/api/transactions/charges", json=body)
        sandbox_stats.append(manager._transport.pool_stats())  # type: ignore[attr-defined]
        return int(response.json["data"]["amount"])

    for _ in range(3):
        assert asyncio.run(charge_once()) == 7  # no "attached to a different loop"
    asyncio.run(manager.aclose())
    # each loop opened its own connection; the previous loop's was closed when it ended
    assert [s[sandbox["url"]].opened for s in sandbox_stats] == [1, 1, 1]


def test_a_kept_alive_stream_the_server_closed_is_replaced_before_sending() -> None:
    connections = 0

    async def main() -> list[int]:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal connections
            connections += 1
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
            writer.close()  # no "Connection: close": the client keeps the stream

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        transport = AsyncHttp11Transport(AsyncioRuntime())
        try:
            statuses = []
            for _ in range(3):
                response = await transport.send(
                    HttpRequest("GET", f"http://127.0.0.1:{port}/"), timeout=5.0
                )
                statuses.append(response.status)
                await asyncio.sleep(0.05)  # the server's close arrives
            return statuses
        finally:
            await transport.aclose()
            server.close()
            await server.wait_closed()

    assert asyncio.run(main()) == [200, 200, 200]
    assert connections == 3


def test_a_thousand_managers_share_one_pool_and_one_watchdog(sandbox: dict[str, Any]) -> None:
    body = {"flow": "PAYIN", "method_code": "PSE", "amount": 9, "currency": "COP", "country": "COL"}
    managers = [
        TokenManager(
            DEFAULT_API_KEY,
            DEFAULT_MERCHANT_ID,
            base_url=sandbox["url"],
            ca_bundle=sandbox["ca_file"],
            store=MemoryStore(),  # a store each: 1,000 tokens, as for 1,000 merchants
        )
        for _ in range(1000)
    ]
    errors: list[BaseException] = []

    def charges(group: list[TokenManager]) -> None:
        try:
            for manager in group:
                assert manager.request("POST", "/api/transactions/charges", json=body).ok
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=charges, args=(managers[n::16],)) for n in range(16)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert errors == []
        stats = process_pools()[sandbox["url"]]
        assert stats.opened <= stats.cap == 10  # 2,000 exchanges on at most 10 connections
        assert [t.name for t in threading.enumerate()].count(WATCHDOG_THREAD) == 1
    finally:
        for manager in managers:
            manager.close()


async def _charge_and_count(
    transport: AsyncHttp11Transport,
    url: str,
    token: Token,
    amount: int,
    seen: list[tuple[int, int]],
) -> None:
    answered = await acharged(transport, url, token, amount)
    (stats,) = transport.pool_stats().values()
    seen.append((answered, stats.opened))


def test_after_a_fork_an_async_child_opens_its_own_connection_and_the_parent_keeps_its_own(
    sandbox: dict[str, Any], token: Token
) -> None:
    url = sandbox["url"]

    async def parent() -> tuple[int, int]:
        transport = AsyncHttp11Transport(AsyncioRuntime(), ca_bundle=sandbox["ca_file"])
        crossed = 0
        try:
            assert await acharged(transport, url, token, 1) == 1  # a pooled stream
            for round_ in range(100):
                mine, theirs = 2 * round_ + 3, 2 * round_ + 4
                pid = os.fork()
                if pid == 0:  # the child: a loop of its own, in a thread of its own
                    status = 1
                    try:
                        seen: list[tuple[int, int]] = []
                        child = _charge_and_count(transport, url, token, theirs, seen)
                        runner = threading.Thread(target=asyncio.run, args=(child,))
                        runner.start()
                        runner.join(30)
                        status = 0 if seen == [(theirs, 1)] else 2
                    finally:
                        os._exit(status)
                answered = await acharged(transport, url, token, mine)
                _, status = os.waitpid(pid, 0)
                crossed += answered != mine or os.waitstatus_to_exitcode(status) != 0
            (stats,) = transport.pool_stats().values()
            return crossed, stats.opened
        finally:
            await transport.aclose()

    crossed, opened = asyncio.run(parent())
    assert crossed == 0
    assert opened == 1  # the parent's stream survived every child
