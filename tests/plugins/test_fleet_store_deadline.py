"""A store whose calls stall: the managers enforce its deadline on every runtime.

``get_token()`` answers from the local path (the process works alone, its own single flight
and limits) while the stalled call is still blocked, and the outage is logged once.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import trio

from eightyeightpay import Token
from eightyeightpay.adapters.async_manager import AsyncTokenManager, open_trio_token_manager
from eightyeightpay.adapters.sync import TokenManager
from eightyeightpay.credentials import CacheKey
from eightyeightpay.fleet import BudgetRequest, Purpose, StoredToken
from eightyeightpay.plugins.fleet import FleetStore, InThreads
from eightyeightpay.plugins.sandbox import DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, SandboxServer
from eightyeightpay.ports import ReadValue
from tests.support import https_options


class Stalling:
    """Blocking operations that hang until the test lets them go."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.entered = 0
        self.finished = 0

    def _stall(self) -> None:
        self.entered += 1
        self.gate.wait(60)
        self.finished += 1

    def read(self, key: CacheKey) -> ReadValue:
        self._stall()
        return None, 0.0, 0.0

    def acquire(self, key: CacheKey, owner: str, ttl: float) -> bool:
        self._stall()
        return True

    def extend(self, key: CacheKey, owner: str, ttl: float) -> bool:
        self._stall()
        return True

    def reserve(self, key: CacheKey, request: BudgetRequest) -> tuple[float, str]:
        self._stall()
        return 0.0, request.epoch

    def join(self, key: CacheKey, member: str, ttl: float) -> int:
        self._stall()
        return 1

    def spent(
        self, key: CacheKey, purpose: Purpose, minute_span: float, hour_span: float
    ) -> tuple[int, int]:
        self._stall()
        return 0, 0

    def write(self, key: CacheKey, token: StoredToken, ttl: float) -> None:
        self._stall()

    def cool_down(self, key: CacheKey, seconds: float) -> None:
        self._stall()

    def release(self, key: CacheKey, owner: str) -> None:
        self._stall()


class StallingStore(FleetStore):
    """A third party's store whose every call hangs (a stalled connection)."""

    name = "stalling"
    deadline = 0.3

    def __init__(self) -> None:
        super().__init__()
        self.ops = Stalling()

    def operations(self) -> Any:
        return self.ops

    def async_operations(self) -> Any:
        return InThreads(self.ops)


@pytest.fixture
def store() -> Iterator[StallingStore]:
    made = StallingStore()
    yield made
    made.ops.gate.set()


@pytest.fixture
def options(
    store: StallingStore, https_server: SandboxServer, caplog: pytest.LogCaptureFixture
) -> dict[str, Any]:
    """A manager's options: the HTTPS emulator and the stalling store; warnings captured."""
    caplog.set_level(logging.WARNING, logger="eightyeightpay")
    return {**https_options(https_server), "store": store}


def _check(store: StallingStore, token: Token, caplog: pytest.LogCaptureFixture) -> None:
    assert isinstance(token, Token)
    assert store.ops.entered == 1 and store.ops.finished == 0  # answered while still stalled
    lines = [r.getMessage() for r in caplog.records if "store unavailable" in r.getMessage()]
    assert len(lines) == 1 and "deadline of 0.3 s" in lines[0]
    assert not store.health.healthy


def test_threads(
    store: StallingStore, options: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    with TokenManager(DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, **options) as manager:
        token = manager.get_token()
        _check(store, token, caplog)
        assert manager.get_token() == token  # the cached path: no store call at all
        assert store.ops.entered == 1


def test_asyncio(
    store: StallingStore, options: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        async with AsyncTokenManager(DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, **options) as manager:
            _check(store, await manager.get_token(), caplog)
        store.ops.gate.set()  # lets the abandoned worker thread end before the loop does

    asyncio.run(main())


def test_trio(
    store: StallingStore, options: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        async with open_trio_token_manager(
            DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, **options
        ) as manager:
            _check(store, await manager.get_token(), caplog)

    trio.run(main)
