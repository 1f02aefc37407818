"""Every runtime and store at DEBUG: no token, session id or API key in any output, and
nothing of them written to disk (home and temporary folders scanned after the run)."""

from __future__ import annotations

import asyncio
import logging
import os
import pathlib
import tempfile
import time
from collections.abc import Callable
from typing import Any

import pytest
import trio
from cryptography.fernet import Fernet

from eightyeightpay import EightyEightPayError, Token
from eightyeightpay.adapters.async_manager import AsyncTokenManager, open_trio_token_manager
from eightyeightpay.adapters.sync import TokenManager
from eightyeightpay.plugins.memory import MemoryStore
from eightyeightpay.plugins.redis_store import RedisStore
from eightyeightpay.plugins.sandbox import (
    DEFAULT_API_KEY,
    DEFAULT_MERCHANT_ID,
    Fault,
    RateLimit,
    Sandbox,
    SandboxServer,
)
from tests.servers import RedisServer

CHARGE = {"flow": "PAYIN", "method_code": "PSE", "amount": 7, "currency": "COP", "country": "COL"}


def stores(redis: RedisServer) -> dict[str, Callable[[], Any]]:
    key = Fernet.generate_key()
    return {
        "memory": MemoryStore,
        "redis": lambda: RedisStore(redis.url),
        "redis-encrypted": lambda: RedisStore(redis.url, encryption_key=key),
    }


def sync_flow(options: dict[str, Any], server: SandboxServer, seen: list[Token]) -> list[str]:
    shown: list[str] = []
    with TokenManager(DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, **options) as manager:
        token = manager.get_token()
        seen.append(token)
        shown += [repr(token), str(token), repr(manager)]
        shown.append(repr(manager.request("POST", "/api/transactions/charges", json=CHARGE)))
        server.sandbox.inject(Fault.status(401), path="/api/balance")
        shown.append(repr(manager.request("POST", f"/api/balance?id={DEFAULT_MERCHANT_ID}")))
        seen.append(manager.get_token())
        manager.invalidate(manager.get_token())
        server.sandbox.inject(Fault.status(500))
        try:
            manager.get_token(deadline=0)  # one request: the flows share 10 a minute
        except EightyEightPayError as error:
            shown += [str(error), repr(error)]
    return shown


async def async_flow(manager: Any, server: SandboxServer, seen: list[Token]) -> list[str]:
    shown: list[str] = []
    token = await manager.get_token()
    seen.append(token)
    shown += [repr(token), repr(manager)]
    shown.append(repr(await manager.request("POST", "/api/transactions/charges", json=CHARGE)))
    server.sandbox.inject(Fault.status(401), path="/api/balance")
    shown.append(repr(await manager.request("POST", f"/api/balance?id={DEFAULT_MERCHANT_ID}")))
    seen.append(await manager.get_token())
    server.sandbox.inject(Fault.reset(), path="/api/transactions/charges")
    try:
        await manager.request("POST", "/api/transactions/charges", json=CHARGE)
    except EightyEightPayError as error:
        shown += [str(error), repr(error)]
    return shown


def recently_written(roots: list[pathlib.Path], since: float) -> list[pathlib.Path]:
    found = []
    for root in roots:
        for directory, _, files in os.walk(root):
            if "/.venv" in directory or "/proc" in directory:
                continue
            for name in files:
                path = pathlib.Path(directory, name)
                try:
                    info = path.stat()
                except OSError:
                    continue
                if info.st_mtime >= since and info.st_size < 20_000_000 and path.is_file():
                    found.append(path)
    return found


@pytest.fixture
def busy_server() -> Any:
    # Nine flows each take several tokens: more than 88Pay's 10 a minute allows one merchant.
    limits = (RateLimit(1000, 60.0), RateLimit(10_000, 3600.0))
    with SandboxServer(Sandbox(token_limits=limits), tls=True) as server:
        yield server


def test_no_secret_in_any_output_or_on_disk(
    busy_server: SandboxServer,
    redis_server: RedisServer,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    started = time.time() - 1
    caplog.set_level(logging.DEBUG)
    assert busy_server.certificates is not None
    base: dict[str, Any] = {
        "base_url": busy_server.url,
        "ca_bundle": str(busy_server.certificates.ca_file),
    }
    seen: list[Token] = []
    shown: list[str] = []
    for name, make_store in stores(redis_server).items():
        shown += sync_flow({**base, "store": make_store()}, busy_server, seen)

        async def on_asyncio(make_store: Callable[[], Any] = make_store) -> list[str]:
            async with AsyncTokenManager(
                DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, store=make_store(), **base
            ) as manager:
                return await async_flow(manager, busy_server, seen)

        async def on_trio(make_store: Callable[[], Any] = make_store) -> list[str]:
            async with open_trio_token_manager(
                DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, store=make_store(), **base
            ) as manager:
                return await async_flow(manager, busy_server, seen)

        shown += asyncio.run(on_asyncio())
        shown += trio.run(on_trio)
        assert name  # every store ran every runtime

    captured = capfd.readouterr()
    output = "\n".join(
        [caplog.text, *(r.getMessage() for r in caplog.records), *shown, captured.out, captured.err]
    )
    secrets = {DEFAULT_API_KEY} | {t.access_token for t in seen} | {t.session_id for t in seen}
    assert len({t.access_token for t in seen}) >= 3  # several tokens really were issued
    assert any(
        r.levelno == logging.DEBUG and r.name.startswith("eightyeightpay") for r in caplog.records
    )
    for secret in secrets:
        assert secret not in output, f"a secret ({len(secret)} characters) reached the output"

    roots = [pathlib.Path.home(), pathlib.Path(tempfile.gettempdir())]
    for path in recently_written(roots, started):
        try:
            data = path.read_bytes()
        except FileNotFoundError:  # removed since the walk by whoever wrote it (another run)
            continue
        for secret in secrets:
            assert secret.encode() not in data, f"a secret was written to {path}"
