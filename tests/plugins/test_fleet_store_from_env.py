"""A store chosen and configured from the environment: EIGHTY_EIGHT_PAY_STORE names it, the
store's own variables configure it, on every runtime."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import trio

from eightyeightpay import AsyncTokenManager, ConfigurationError, Token, TokenManager
from eightyeightpay.adapters.async_manager import open_trio_token_manager
from eightyeightpay.plugins import redis_store
from eightyeightpay.plugins.redis_store import RedisStore
from eightyeightpay.plugins.sandbox import DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, SandboxServer
from tests.servers import RedisServer


@pytest.fixture
def environment(
    https_server: SandboxServer, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, str]]:
    assert https_server.certificates is not None
    values = {
        "EIGHTY_EIGHT_PAY_API_KEY": DEFAULT_API_KEY,
        "EIGHTY_EIGHT_PAY_MERCHANT_ID": DEFAULT_MERCHANT_ID,
        "EIGHTY_EIGHT_PAY_BASE_URL": https_server.url,
        "EIGHTY_EIGHT_PAY_STORE": " redis ",
        "EIGHTY_EIGHT_PAY_REDIS_URL": redis_server.url,
        "SSL_CERT_FILE": str(https_server.certificates.ca_file),
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    # store="redis" is one store per process for its options: start without one made earlier
    monkeypatch.setattr(redis_store, "_process_stores", {})
    yield values


def test_the_store_comes_from_the_environment_on_every_runtime(
    environment: dict[str, str], https_server: SandboxServer, redis_server: RedisServer
) -> None:
    with TokenManager.from_env() as manager:
        token = manager.get_token()
        key = manager.credentials.cache_key
    stored, ttl, _ = RedisStore(redis_server.url).operations().read(key)
    assert stored is not None and ttl > 0  # the token went through the Redis named above

    async def on_asyncio() -> Token:
        async with AsyncTokenManager.from_env() as manager:
            return await manager.get_token()

    async def on_trio() -> Token:
        async with open_trio_token_manager() as manager:
            return await manager.get_token()

    assert asyncio.run(on_asyncio()).access_token == token.access_token
    assert trio.run(on_trio).access_token == token.access_token
    assert https_server.sandbox.stats()["token_requests"] == 1


def test_an_unknown_store_name_is_a_configuration_error(
    environment: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EIGHTY_EIGHT_PAY_STORE", "no-such-store")
    with pytest.raises(ConfigurationError, match="no-such-store"):
        TokenManager.from_env()
