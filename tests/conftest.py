"""Fixtures shared across the suite: emulators in-process and over HTTPS on loopback.

Hypothesis runs repeatably by default: the same examples on every run, so that a red run
is a finding anyone can reproduce, never the luck of a seed. ``--hypothesis-profile=explore``
draws new examples on each run, for looking harder (see docs/reliability.md).
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
from hypothesis import settings

from eightyeightpay.adapters.sync import ManualBackground, TokenManager
from eightyeightpay.plugins.memory import MemoryStore
from eightyeightpay.plugins.sandbox import (
    DEFAULT_API_KEY,
    DEFAULT_MERCHANT_ID,
    FakeClock,
    Sandbox,
    SandboxServer,
    SandboxTransport,
)
from tests.servers import MemcachedServer, RedisServer, running

settings.register_profile("repeatable", derandomize=True, database=None)
settings.register_profile("explore", derandomize=False)
settings.load_profile("repeatable")


class InProcess:
    """A sandbox served in-process, a fake clock, and managers bound to them."""

    def __init__(self) -> None:
        self.clock = FakeClock()
        self.sandbox = Sandbox()
        self.transport = SandboxTransport(self.sandbox, self.clock)
        self.background = ManualBackground()
        self.store = MemoryStore()
        self.managers: list[TokenManager] = []

    def manager(
        self,
        api_key: str = DEFAULT_API_KEY,
        merchant_id: str = DEFAULT_MERCHANT_ID,
        **options: object,
    ) -> TokenManager:
        settings: dict[str, object] = {
            "transport": self.transport,
            "clock": self.clock,
            "sleep": self.clock.advance,  # a manager's wait moves the fake time
            "background": self.background,
            "store": self.store,
            "rng": random.Random(3),
        }
        settings.update(options)
        manager = TokenManager(api_key, merchant_id, **settings)  # type: ignore[arg-type]
        self.managers.append(manager)
        return manager

    def stat(self, name: str) -> int:
        return self.sandbox.stats()[name]


@pytest.fixture
def inproc() -> Iterator[InProcess]:
    world = InProcess()
    yield world
    for manager in world.managers:
        manager.close()


@pytest.fixture
def https_server() -> Iterator[SandboxServer]:
    with SandboxServer(Sandbox(), tls=True) as server:
        yield server


@pytest.fixture
def https_manager(https_server: SandboxServer) -> Iterator[TokenManager]:
    certificates = https_server.certificates
    assert certificates is not None
    with TokenManager(
        DEFAULT_API_KEY,
        DEFAULT_MERCHANT_ID,
        base_url=https_server.url,
        ca_bundle=str(certificates.ca_file),
        store=MemoryStore(),
    ) as manager:
        yield manager


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with running(RedisServer()) as server:
        yield server


@pytest.fixture
def memcached_server() -> Iterator[MemcachedServer]:
    with running(MemcachedServer()) as server:
        yield server
