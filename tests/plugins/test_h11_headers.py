"""The h11 transport checks a header list once and sends exactly each request's headers.

A loopback HTTP server (h11 on the server side) records the headers of every request it is
sent; the transport's checked headers are reused across calls, so these tests prove that a
new token or a new body length goes on the wire as it is, that a header h11 refuses is
refused every time, and that a closed transport keeps no token.
"""

from __future__ import annotations

import asyncio
import gc
import types
from typing import Any

import h11
import pytest

from eightyeightpay.errors import ConnectionLost
from eightyeightpay.http import HttpRequest
from eightyeightpay.plugins.h11_transport import AsyncHttp11Transport
from eightyeightpay.plugins.runtimes import AsyncioRuntime


class _Recorder:
    """An HTTP/1.1 server on a free loopback port that answers ``{}`` to everything."""

    def __init__(self) -> None:
        self.seen: list[dict[str, str]] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        protocol = h11.Connection(h11.SERVER)
        try:
            while True:
                event = protocol.next_event()
                if event is h11.NEED_DATA:
                    data = await reader.read(65536)
                    protocol.receive_data(data)
                    if not data:
                        return
                elif isinstance(event, h11.Request):
                    self.seen.append({k.decode(): v.decode() for k, v in event.headers})
                elif isinstance(event, h11.EndOfMessage):
                    body = b"{}"
                    headers = [("Content-Length", str(len(body)))]
                    writer.write(protocol.send(h11.Response(status_code=200, headers=headers)))
                    writer.write(protocol.send(h11.Data(data=body)))
                    writer.write(protocol.send(h11.EndOfMessage()))
                    await writer.drain()
                    protocol.start_next_cycle()
                elif isinstance(event, h11.ConnectionClosed):
                    return
        finally:
            writer.close()

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


def _request(
    url: str, token: str, body: bytes = b"", extra: dict[str, str] | None = None
) -> HttpRequest:
    headers = [
        ("Authorization", f"Bearer {token}"),
        ("x-session-id", f"session-of-{token}"),
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(body))),
        *(extra or {}).items(),
    ]
    return HttpRequest("POST", url + "/api/charges", tuple(headers), body)


def test_each_request_goes_out_with_its_own_headers_across_tokens_and_body_lengths() -> None:
    async def scenario() -> list[dict[str, str]]:
        recorder = _Recorder()
        url = await recorder.start()
        transport = AsyncHttp11Transport(AsyncioRuntime())
        try:
            # 12 distinct header lists (more than the transport keeps checked), each sent
            # twice, interleaved: a reused check must never carry another call's values.
            for round_ in range(2):
                for n in range(12):
                    body = b"x" * (n % 3)
                    request = _request(url, f"tok{n % 4}", body, {"X-Call": f"{n}-{round_}"})
                    response = await transport.send(request, timeout=5.0)
                    assert response.status == 200
        finally:
            await transport.aclose()
            await recorder.stop()
        return recorder.seen

    seen = asyncio.run(scenario())
    assert len(seen) == 24
    for index, headers in enumerate(seen):
        n, round_ = index % 12, index // 12
        assert headers["authorization"] == f"Bearer tok{n % 4}"
        assert headers["x-session-id"] == f"session-of-tok{n % 4}"
        assert headers["content-length"] == str(n % 3)
        assert headers["x-call"] == f"{n}-{round_}"
        assert headers["host"].startswith("127.0.0.1:")


def test_a_header_h11_refuses_is_refused_on_every_call_and_nothing_is_sent() -> None:
    async def scenario() -> tuple[list[str], int]:
        recorder = _Recorder()
        url = await recorder.start()
        transport = AsyncHttp11Transport(AsyncioRuntime())
        errors: list[str] = []
        try:
            for _ in range(3):
                bad = _request(url, "tok", extra={"X-Bad": "line\nbreak"})
                with pytest.raises(ConnectionLost) as caught:
                    await transport.send(bad, timeout=5.0)
                errors.append(str(caught.value))
            good = await transport.send(_request(url, "tok"), timeout=5.0)
            assert good.status == 200
        finally:
            await transport.aclose()
            await recorder.stop()
        return errors, len(recorder.seen)

    errors, requests_seen = asyncio.run(scenario())
    assert len(errors) == 3 and all("LocalProtocolError" in e for e in errors)
    assert requests_seen == 1  # only the good one reached the server


_NOT_ENTERED = (
    types.ModuleType,
    type,
    asyncio.AbstractEventLoop,
    asyncio.Future,  # tasks too
    types.FunctionType,
    types.MethodType,
    types.FrameType,
    types.CoroutineType,
    types.CellType,
)


def _reachable_strings(root: object, limit: int = 20_000) -> set[str]:
    """Every str reachable from ``root`` through containers and instances.

    Modules, classes, event loops, tasks, functions and frames are not entered: they reach
    everything that ran, the test's own values and the recording server's copy of each
    request too. What is left is the transport's own data.
    """
    found: set[str] = set()
    stack, visited = [root], set[int]()
    while stack and len(visited) < limit:
        item = stack.pop()
        if id(item) in visited or isinstance(item, _NOT_ENTERED):
            continue
        visited.add(id(item))
        if isinstance(item, str):
            found.add(item)
        elif isinstance(item, bytes | bytearray):
            found.add(bytes(item).decode("latin-1"))
        else:
            stack.extend(gc.get_referents(item))
    return found


def test_a_closed_transport_keeps_no_token() -> None:
    secret = "tok-that-must-not-stay-behind"

    async def scenario() -> tuple[AsyncHttp11Transport, bool]:
        recorder = _Recorder()
        url = await recorder.start()
        transport = AsyncHttp11Transport(AsyncioRuntime())
        await transport.send(_request(url, secret), timeout=5.0)
        held_while_open = any(secret in s for s in _reachable_strings(transport))
        await transport.aclose()
        await recorder.stop()
        return transport, held_while_open

    transport, held_while_open = asyncio.run(scenario())
    assert held_while_open  # the walk can see the checked headers while the transport is open
    leftover: Any = [s for s in _reachable_strings(transport) if secret in s]
    assert leftover == []


def test_calls_to_two_hosts_in_turn_each_go_to_their_own_host_on_their_own_pool() -> None:
    async def scenario() -> tuple[list[int], dict[str, Any]]:
        first, second = _Recorder(), _Recorder()
        urls = [await first.start(), await second.start()]
        transport = AsyncHttp11Transport(AsyncioRuntime())
        try:
            for n in range(10):
                url = urls[n % 2]
                request = _request(url, "tok", extra={"X-Call": str(n)})
                assert (await transport.send(request, timeout=5.0)).status == 200
            stats = {name: (s.opened, s.open) for name, s in transport.pool_stats().items()}
        finally:
            await transport.aclose()
            await first.stop()
            await second.stop()
        calls = [int(h["x-call"]) for h in first.seen] + [int(h["x-call"]) for h in second.seen]
        return calls, stats

    calls, stats = asyncio.run(scenario())
    assert calls == [0, 2, 4, 6, 8, 1, 3, 5, 7, 9]
    assert sorted(stats.values()) == [(1, 1), (1, 1)]  # one connection each, kept alive
