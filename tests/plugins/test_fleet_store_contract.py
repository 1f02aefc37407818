"""The built-in stores run the contract suite shipped for store authors
(``eightyeightpay.adapters.store_contract``), against servers started on loopback."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from eightyeightpay.adapters.store_contract import ContractFleet, StoreContract
from eightyeightpay.plugins.memcached_store import MemcachedStore
from eightyeightpay.plugins.redis_store import RedisStore
from tests.servers import MemcachedServer, RedisServer, ServerProcess


def _outage(server: ServerProcess) -> Callable[[], contextlib.AbstractContextManager[object]]:
    @contextlib.contextmanager
    def outage() -> Iterator[None]:
        server.stop()
        try:
            yield
        finally:
            server.start()

    return outage


class BuiltInStoreContract(StoreContract):
    """The shipped suite, and what the built-in stores add to it."""

    def test_stats_show_the_fleets_spend_as_the_store_counts_it(
        self, fleet: ContractFleet, server: ServerProcess
    ) -> None:
        sender, adopter = fleet.process(), fleet.process()
        assert sender.get_token() == adopter.get_token()
        mine = adopter.stats()
        assert (mine.minute_spent, mine.budget_scope, mine.fleet_minute_spent) == (
            0,
            "process",
            None,
        )
        both = adopter.stats(fleet=True)
        assert (both.fleet_minute_spent, both.fleet_hour_spent) == (1, 1)
        assert (both.minute_remaining, both.hour_remaining, both.budget_scope) == (9, 99, "fleet")
        server.stop()
        down = adopter.stats(fleet=True)  # the store cannot count: the process's figures stand
        assert (down.budget_scope, down.minute_remaining) == ("process", 10)


class TestRedisStoreContract(BuiltInStoreContract):
    @pytest.fixture
    def server(self, redis_server: RedisServer) -> RedisServer:
        return redis_server

    @pytest.fixture
    def make_store(self, server: RedisServer) -> Callable[..., Any]:
        return lambda **options: RedisStore(server.url, **options)

    @pytest.fixture
    def store_outage(self, server: RedisServer) -> Any:
        return _outage(server)


class TestMemcachedStoreContract(BuiltInStoreContract):
    @pytest.fixture
    def server(self, memcached_server: MemcachedServer) -> MemcachedServer:
        return memcached_server

    @pytest.fixture
    def make_store(self, server: MemcachedServer) -> Callable[..., Any]:
        return lambda **options: MemcachedStore(server.address, **options)

    @pytest.fixture
    def store_outage(self, server: MemcachedServer) -> Any:
        return _outage(server)
