"""Request overhead: ``request()`` against the raw client, to the same HTTPS loopback emulator.

The emulator runs in a process of its own (:mod:`.serve`), as 88Pay's servers would.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio
import urllib3

from eightyeightpay.adapters.async_manager import AsyncTokenManager, open_trio_token_manager
from eightyeightpay.adapters.sync import TokenManager
from eightyeightpay.api import build_api_request
from eightyeightpay.plugins.memory import MemoryStore
from eightyeightpay.plugins.sandbox import DEFAULT_API_KEY, DEFAULT_MERCHANT_ID
from eightyeightpay.policy import Policy
from eightyeightpay.tokens import Token

from .baseline import H11Client
from .common import Figures, ainterleaved, interleaved, ratio
from .serve import emulator_process

UNGOVERNED = Policy(api_per_minute=None, api_per_hour=None)
"""The emulator here has no API limit: thousands of calls a second, none refused here."""

PATH = f"/api/balance?id={DEFAULT_MERCHANT_ID}"


def ungoverned(url: str) -> dict[str, Any]:
    """A manager's options for the emulator at ``url``: a memory store, :data:`UNGOVERNED`."""
    return {"base_url": url, "store": MemoryStore(), "policy": UNGOVERNED}


def ungoverned_manager(url: str, ca_file: str) -> TokenManager:
    """A threaded manager on the emulator at ``url`` (CA ``ca_file``), :func:`ungoverned`."""
    return TokenManager(DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, ca_bundle=ca_file, **ungoverned(url))


TRANSPORT_ALONE = "its transport alone"
"""The manager's own transport sending a request built once: where the overhead lies."""


def _headers(token: Token) -> dict[str, str]:
    return {
        "Authorization": f"Bearer {token.access_token}",
        "x-session-id": token.session_id,
        "Content-Type": "application/json",
    }


def _result(per_call: dict[str, float], raw: str) -> Figures:
    ours = per_call["eightyeightpay request()"]
    return {
        name: {"us_per_call": round(seconds * 1e6, 1), "ours_vs_this": ratio(ours, seconds)}
        for name, seconds in per_call.items()
    } | {"yardstick": raw}


def threaded(url: str, ca_file: str, rounds: int, calls: int) -> Figures:
    """``TokenManager.request()`` against ``urllib3.PoolManager.request`` + ``json.loads``."""
    with ungoverned_manager(url, ca_file) as manager:
        token = manager.get_token()
        headers = _headers(token)
        pool = urllib3.PoolManager(ca_certs=ca_file, retries=False)
        url = url + PATH

        def raw() -> float:
            started = time.perf_counter()
            for _ in range(calls):
                response = pool.request("POST", url, headers=headers)
                json.loads(response.data)
            return (time.perf_counter() - started) / calls

        def ours() -> float:
            started = time.perf_counter()
            for _ in range(calls):
                manager.request("POST", PATH)
            return (time.perf_counter() - started) / calls

        request = build_api_request(manager.credentials.base_url, token, "POST", PATH)

        def transport_alone() -> float:
            started = time.perf_counter()
            for _ in range(calls):
                json.loads(manager._transport.send(request, timeout=30.0).body)
            return (time.perf_counter() - started) / calls

        contenders = {"eightyeightpay request()": ours, TRANSPORT_ALONE: transport_alone}
        per_call = interleaved(contenders | {"raw urllib3": raw}, rounds)
        pool.clear()
    return _result(per_call, "raw urllib3")


def _async_pair(
    manager: Any, client: H11Client, token: Token, calls: int
) -> dict[str, Callable[[], Awaitable[float]]]:
    headers = list(_headers(token).items())

    async def raw() -> float:
        started = time.perf_counter()
        for _ in range(calls):
            _, body = await client.post(PATH, headers, b"")
            json.loads(body)
        return (time.perf_counter() - started) / calls

    async def ours() -> float:
        started = time.perf_counter()
        for _ in range(calls):
            await manager.request("POST", PATH)
        return (time.perf_counter() - started) / calls

    request = build_api_request(manager.credentials.base_url, token, "POST", PATH)

    async def transport_alone() -> float:
        started = time.perf_counter()
        for _ in range(calls):
            json.loads((await manager._transport.send(request, timeout=30.0)).body)
        return (time.perf_counter() - started) / calls

    return {"eightyeightpay request()": ours, TRANSPORT_ALONE: transport_alone, "raw h11": raw}


async def transport_alone(manager: Any) -> Callable[[], Awaitable[object]]:
    """One exchange of ``manager``'s own async transport, its body parsed: the request is
    built once, with the manager's current token (the split between transport and protocol)."""
    token = await manager.get_token()
    request = build_api_request(manager.credentials.base_url, token, "POST", PATH)
    transport = manager._transport

    async def alone() -> object:
        return json.loads((await transport.send(request, timeout=30.0)).body)

    return alone


def on_runtime(runtime: str, emulator: dict[str, Any], rounds: int, calls: int) -> Figures:
    """``await request()`` against a raw h11 exchange, on asyncio or trio."""
    ca_file = emulator["ca_file"]
    options = {"ca_bundle": ca_file, **ungoverned(emulator["url"])}

    async def measure(manager: Any) -> Figures:
        client = H11Client(runtime, "127.0.0.1", emulator["port"], ca_file)
        token = await manager.get_token()
        per_call = await ainterleaved(_async_pair(manager, client, token, calls), rounds)
        await client.aclose()
        return _result(per_call, "raw h11")

    if runtime == "asyncio":

        async def main_asyncio() -> Figures:
            async with AsyncTokenManager(DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, **options) as m:
                return await measure(m)

        return asyncio.run(main_asyncio())

    async def main_trio() -> Figures:
        async with open_trio_token_manager(DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, **options) as m:
            return await measure(m)

    return trio.run(main_trio)


def run(quick: bool) -> Figures:
    """Per-call time of ``request()`` and the raw client on every runtime."""
    rounds, calls = (5, 50) if quick else (25, 200)
    with emulator_process() as emulator:
        return {
            "threads": threaded(emulator["url"], emulator["ca_file"], rounds, calls),
            "asyncio": on_runtime("asyncio", emulator, rounds, calls),
            "trio": on_runtime("trio", emulator, rounds, calls),
        }
