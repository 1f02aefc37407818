"""A pytest plugin for testing payment code against the 88Pay emulator.

Installed with the package (entry point ``pytest11``) and inert until a test asks for one of
its fixtures; nothing is imported or started otherwise.

- ``eightyeightpay_fake``: an in-process emulator on a fake clock. Time moves only when the
  test says so, so token expiry and 429 cool-downs are tested without sleeping.
- ``eightyeightpay_sandbox``: the emulator served over HTTPS on loopback, with its test
  credentials and the CA file to trust, for code that builds its own manager or client.
- ``StoreContract`` (loaded on first use, from ``eightyeightpay.adapters.store_contract``):
  the fleet-store contract suite a store author subclasses in a test module and points at
  their own store (see docs/store-plugin.md).
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from eightyeightpay.adapters.async_manager import AsyncTokenManager, TrioTokenManager
    from eightyeightpay.adapters.sync import ManualBackground, TokenManager
    from eightyeightpay.plugins.sandbox import FakeClock, Sandbox, SandboxServer

__all__ = ["FakeWorld", "SandboxInfo", "eightyeightpay_fake", "eightyeightpay_sandbox"]


def __getattr__(name: str) -> Any:
    if name == "StoreContract":  # imported on first use: the plugin stays inert otherwise
        from .store_contract import StoreContract

        return StoreContract
    raise AttributeError(name)


class FakeWorld:
    """An emulator, a fake clock and managers bound to them, with no sockets and no sleeping."""

    def __init__(self) -> None:
        from eightyeightpay.adapters.sync import ManualBackground
        from eightyeightpay.plugins.memory import MemoryStore
        from eightyeightpay.plugins.sandbox import (
            DEFAULT_API_KEY,
            DEFAULT_MERCHANT_ID,
            FakeClock,
            Sandbox,
            SandboxTransport,
        )

        self.clock: FakeClock = FakeClock()
        """The clock of the emulator and of every manager made here; ``advance()`` moves it."""
        self.sandbox: Sandbox = Sandbox()
        """The emulator: ``inject()`` faults, read ``stats()``."""
        self.api_key = DEFAULT_API_KEY
        """The emulator's test API key."""
        self.merchant_id = DEFAULT_MERCHANT_ID
        """The emulator's test merchant id."""
        self.background: ManualBackground = ManualBackground()
        """Refresh-ahead jobs; :meth:`run_background` runs them."""
        self._transport = SandboxTransport(self.sandbox, self.clock)
        self._store = MemoryStore()
        self._managers: list[TokenManager] = []

    def manager(self, **options: Any) -> TokenManager:
        """A threaded manager on this world's emulator and clock (closed after the test)."""
        from eightyeightpay.adapters.sync import TokenManager

        api_key, merchant_id, settings = self._settings(
            options,
            transport=self._transport,
            sleep=self.clock.advance,  # a manager's wait (a backoff, a cool-down) moves time
            background=self.background,
        )
        manager = TokenManager(api_key, merchant_id, **settings)
        self._managers.append(manager)
        return manager

    def _settings(
        self, options: dict[str, Any], **defaults: Any
    ) -> tuple[str, str, dict[str, Any]]:
        """A manager's key, merchant id and keyword arguments.

        This world's clock, store and a seeded RNG, then ``defaults``, then the test's
        ``options`` (which may name ``api_key`` and ``merchant_id`` too).
        """
        settings: dict[str, Any] = {
            "clock": self.clock,
            "store": self._store,
            "rng": random.Random(0),
            **defaults,
            **options,
        }
        api_key = settings.pop("api_key", self.api_key)
        merchant_id = settings.pop("merchant_id", self.merchant_id)
        return api_key, merchant_id, settings

    def _async_settings(
        self, options: dict[str, Any], checkpoint: Callable[[float], Awaitable[None]]
    ) -> tuple[str, str, dict[str, Any]]:
        """:meth:`_settings` for an async manager: the async emulator, and a clock-moving sleep.

        The sleep advances this world's clock, then lets the loop's other tasks run
        (``checkpoint(0)``: ``asyncio.sleep`` or ``trio.sleep``).
        """
        from eightyeightpay.plugins.sandbox.async_transport import AsyncSandboxTransport

        async def sleep(seconds: float) -> None:
            self.clock.advance(seconds)
            await checkpoint(0)

        transport = AsyncSandboxTransport(self.sandbox, self.clock)
        return self._settings(options, transport=transport, sleep=sleep)

    @contextlib.asynccontextmanager
    async def asyncio_manager(self, **options: Any) -> AsyncIterator[AsyncTokenManager]:
        """An asyncio manager on this world's emulator and clock, closed when the block ends.

        ``async with world.asyncio_manager() as manager:`` inside ``asyncio.run`` (or an
        async test). Its waits (a backoff, a ``429``'s cool-down within the call's deadline)
        move the fake clock instead of sleeping.
        """
        import asyncio

        from eightyeightpay.adapters.async_manager import AsyncTokenManager

        api_key, merchant_id, settings = self._async_settings(options, asyncio.sleep)
        async with AsyncTokenManager(api_key, merchant_id, **settings) as manager:
            yield manager

    @contextlib.asynccontextmanager
    async def trio_manager(self, **options: Any) -> AsyncIterator[TrioTokenManager]:
        """A trio manager on this world's emulator and clock, its nursery opened here.

        ``async with world.trio_manager() as manager:`` inside ``trio.run``; waits move the
        fake clock, as with :meth:`asyncio_manager`.
        """
        import trio

        from eightyeightpay.adapters.async_manager import open_trio_token_manager

        api_key, merchant_id, settings = self._async_settings(options, trio.sleep)
        async with open_trio_token_manager(api_key, merchant_id, **settings) as manager:
            yield manager

    def run_background(self) -> int:
        """Run pending refresh-ahead jobs, as the worker thread would; returns how many ran."""
        return self.background.run_pending()

    def rate_limit_next_token_request(self, retry_after: int = 30) -> None:
        """Make the emulator answer the next token request with a documented 429."""
        from eightyeightpay.plugins.sandbox import Fault

        body = (
            b'{"status":"Error","code":429,"message":"Rate limit exceeded. Please try again '
            b'later.","retry_after":' + str(retry_after).encode() + b"}"
        )
        self.sandbox.inject(Fault.status(429, body=body), path="/api/auth/token")

    def close(self) -> None:
        """Close every manager made here."""
        for manager in self._managers:
            manager.close()


class SandboxInfo:
    """A running HTTPS emulator and what a client needs to use it."""

    def __init__(self, server: SandboxServer) -> None:
        from eightyeightpay.plugins.sandbox import DEFAULT_API_KEY, DEFAULT_MERCHANT_ID

        assert server.certificates is not None
        self.server = server
        """The server; ``server.sandbox`` is the emulator (faults, counters)."""
        self.url = server.url
        """The base URL."""
        self.api_key = DEFAULT_API_KEY
        """The emulator's test API key."""
        self.merchant_id = DEFAULT_MERCHANT_ID
        """The emulator's test merchant id."""
        self.ca_file = str(server.certificates.ca_file)
        """The throw-away CA to trust (``ca_bundle=`` or ``SSL_CERT_FILE``)."""

    @property
    def sandbox(self) -> Sandbox:
        """The emulator behind the server."""
        return self.server.sandbox

    def environ(self) -> dict[str, str]:
        """The ``EIGHTY_EIGHT_PAY_*`` variables (and ``SSL_CERT_FILE``) that point at it."""
        return {
            "EIGHTY_EIGHT_PAY_API_KEY": self.api_key,
            "EIGHTY_EIGHT_PAY_MERCHANT_ID": self.merchant_id,
            "EIGHTY_EIGHT_PAY_BASE_URL": self.url,
            "SSL_CERT_FILE": self.ca_file,
        }


@pytest.fixture
def eightyeightpay_fake() -> Iterator[FakeWorld]:
    """An in-process 88Pay emulator on a fake clock (see :class:`FakeWorld`)."""
    world = FakeWorld()
    yield world
    world.close()


@pytest.fixture
def eightyeightpay_sandbox() -> Iterator[SandboxInfo]:
    """The 88Pay emulator over HTTPS on a free loopback port (see :class:`SandboxInfo`)."""
    from eightyeightpay.plugins.sandbox import Sandbox, SandboxServer

    with SandboxServer(Sandbox(), tls=True) as server:
        yield SandboxInfo(server)
