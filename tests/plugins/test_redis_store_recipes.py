"""docs/stores.md's TLS and ACL recipe, as written, against a redis-server that speaks only
TLS and has no default user; and what a TLS failure looks like."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import pytest
import trio

from eightyeightpay import Policy, Token, TokenManager
from eightyeightpay.adapters.async_manager import AsyncTokenManager, open_trio_token_manager
from eightyeightpay.plugins.redis_store import RedisStore
from eightyeightpay.plugins.sandbox import DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, SandboxServer
from eightyeightpay.plugins.sandbox.tls import make_test_ca
from tests.plugins.fleet_support import Fleet
from tests.recipes import recipe_store
from tests.servers import RedisServer, TlsAclRedis, running


@pytest.fixture
def tls_redis() -> Iterator[TlsAclRedis]:
    with running(TlsAclRedis()) as server:
        yield server


def recipe_fleet(https_server: SandboxServer, tls_redis: TlsAclRedis, ca_file: str) -> Fleet:
    """Processes whose stores are made by docs/stores.md's TLS+ACL recipe, trusting ``ca_file``."""

    def make(**options: object) -> object:
        return recipe_store(
            "tls-acl",
            USER=tls_redis.user,
            PASSWORD=tls_redis.password,
            HOST="127.0.0.1",
            PORT=tls_redis.port,
            CA_FILE=ca_file,
        )

    return Fleet(https_server, make)  # type: ignore[arg-type]


def test_tls_and_acl_through_the_documented_recipe(
    tls_redis: TlsAclRedis, https_server: SandboxServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fleet = recipe_fleet(https_server, tls_redis, str(tls_redis.certificates.ca_file))
    try:
        token = fleet.process().get_token()
        assert fleet.process().get_token() == token

        async def on_asyncio() -> Token:
            async with AsyncTokenManager(
                DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, store=fleet.store(), **fleet.options
            ) as manager:
                return await manager.get_token()

        async def on_trio() -> Token:
            async with open_trio_token_manager(
                DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, store=fleet.store(), **fleet.options
            ) as manager:
                return await manager.get_token()

        assert asyncio.run(on_asyncio()) == token
        assert trio.run(on_trio) == token
        assert fleet.token_requests() == 1
        assert all(store.health.outages == 0 for store in fleet.stores)
    finally:
        fleet.close()
    assert tls_redis.password not in caplog.text


def test_a_tls_failure_says_it_is_one_and_the_process_works_alone(
    tls_redis: TlsAclRedis,
    https_server: SandboxServer,
    caplog: pytest.LogCaptureFixture,
    tmp_path: object,
) -> None:
    caplog.set_level(logging.WARNING, logger="eightyeightpay")
    other_ca = make_test_ca(str(tmp_path))  # not the CA that signed the server's certificate
    fleet = recipe_fleet(https_server, tls_redis, str(other_ca.ca_file))
    try:
        assert isinstance(fleet.process().get_token(), Token)  # no error reaches the caller
    finally:
        fleet.close()
    # A CA that did not sign the server's certificate is a configuration mistake: one ERROR.
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(lines) == 1 and "refused this process's configuration" in lines[0]
    assert "TLS failure, the server's certificate was not verified" in lines[0]
    assert tls_redis.password not in caplog.text


def test_rediss_to_a_plain_port_is_reported_once_as_tls_without_a_failover_wait(
    redis_server: RedisServer,
    https_server: SandboxServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A plain Redis never answers a TLS ClientHello: the handshake times out.

    The outage is logged once and says it is TLS; the handshake is tried once per store call
    (a fresh connection cures nothing) and never read again within the failover grace, so
    the call answers before the store deadline, not after it.
    """
    caplog.set_level(logging.WARNING, logger="eightyeightpay")
    assert https_server.certificates is not None
    store = RedisStore(f"rediss://127.0.0.1:{redis_server.port}/0", timeout=2.0)
    with TokenManager(
        DEFAULT_API_KEY,
        DEFAULT_MERCHANT_ID,
        base_url=https_server.url,
        ca_bundle=str(https_server.certificates.ca_file),
        store=store,
        # One process: without it, a process that never reached its store keeps to the
        # share of a fleet of 10 (1 token a minute), and the second refresh is refused.
        policy=Policy(assumed_fleet_size=1),
    ) as manager:
        first = manager.get_token()  # no error reaches the caller
        manager.invalidate(first)
        assert manager.get_token() != first  # a second refresh, still alone
    lines = [r.getMessage() for r in caplog.records if "store unavailable" in r.getMessage()]
    assert len(lines) == 1, lines
    assert "did not answer the TLS handshake" in lines[0]
    assert "deadline" not in lines[0]  # the handshake's own failure, not the store deadline
    assert store.health.outages == 1
    stats = manager.stats()
    assert stats.store_mode == "degraded"
