"""The built-in stores run the contract suite shipped for store authors
(``eightyeightpay.adapters.store_contract``), against servers started on loopback."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from eightyeightpay import Policy
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

    def test_stats_show_the_fleets_api_calls_as_the_store_counts_them(
        self, fleet: ContractFleet, server: ServerProcess
    ) -> None:
        from eightyeightpay.plugins.sandbox import DEFAULT_MERCHANT_ID

        caller, watcher = fleet.process(), fleet.process()
        for _ in range(2):
            caller.request("POST", f"/api/balance?id={DEFAULT_MERCHANT_ID}")
        mine = watcher.stats()
        assert (mine.api_minute_spent, mine.api_budget_scope, mine.api_minute_remaining) == (
            0,
            "process",
            60,
        )
        both = watcher.stats(fleet=True)
        assert (both.fleet_api_minute_spent, both.fleet_api_hour_spent) == (2, 2)
        assert (both.api_minute_remaining, both.api_hour_remaining) == (58, 998)
        assert both.api_budget_scope == "fleet"
        assert "API calls 0/60 this minute, 0/1000 this hour (fleet: 2/60" in both.summary()
        server.stop()
        down = watcher.stats(fleet=True)  # the store cannot count: the process's figures stand
        assert (down.api_budget_scope, down.api_minute_remaining) == ("process", 60)

    def test_a_compressed_policys_fleet_figures_count_its_windows(
        self, fleet: ContractFleet
    ) -> None:
        """Policy.compressed(60): 10 token requests and 60 API calls per 1 s, 100 and 1,000
        per 60 s; the fleet's sends leave the short window after a second, as the policy
        counts them (not after 60 s), the API calls' as the token requests'."""
        from eightyeightpay.plugins.sandbox import DEFAULT_MERCHANT_ID

        policy = Policy().compressed(60)
        sender = fleet.process(policy=policy)
        sender.request("POST", f"/api/balance?id={DEFAULT_MERCHANT_ID}")
        now = sender.stats(fleet=True)
        assert (now.fleet_minute_spent, now.fleet_api_minute_spent) == (1, 1)
        time.sleep(1.1)
        later = sender.stats(fleet=True)
        assert (later.fleet_minute_spent, later.fleet_hour_spent) == (0, 1)
        assert (later.minute_spent, later.hour_spent) == (0, 1)
        assert (later.fleet_api_minute_spent, later.fleet_api_hour_spent) == (0, 1)
        assert (later.api_minute_spent, later.api_hour_spent) == (0, 1)


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
