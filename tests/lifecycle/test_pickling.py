"""Pickling never carries a secret: from_env() managers travel as a recipe, others refuse."""

from __future__ import annotations

import asyncio
import pickle
from collections.abc import Iterator

import pytest

from eightyeightpay import (
    DEFAULT_API_KEY,
    DEFAULT_MERCHANT_ID,
    AsyncTokenManager,
    EightyEightPayAuth,
    EightyEightPayRequestsAuth,
    MemoryStore,
    NotPicklable,
    Policy,
    SandboxServer,
    TokenManager,
)
from tests.lifecycle.workers import CHARGE


@pytest.fixture
def ca_file(https_server: SandboxServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    assert https_server.certificates is not None
    monkeypatch.setenv("EIGHTY_EIGHT_PAY_API_KEY", DEFAULT_API_KEY)
    monkeypatch.setenv("EIGHTY_EIGHT_PAY_MERCHANT_ID", DEFAULT_MERCHANT_ID)
    monkeypatch.setenv("EIGHTY_EIGHT_PAY_BASE_URL", https_server.url)
    yield str(https_server.certificates.ca_file)


def test_a_from_env_manager_pickles_without_key_or_token_and_loads_working(
    https_server: SandboxServer, ca_file: str
) -> None:
    policy = Policy()
    with TokenManager.from_env(ca_bundle=ca_file, policy=policy, timeout=20.0) as manager:
        token = manager.get_token()
        data = pickle.dumps(manager)
        for secret in (DEFAULT_API_KEY, token.access_token, token.session_id):
            assert secret.encode() not in data
        with pickle.loads(data) as loaded:
            assert isinstance(loaded, TokenManager) and loaded is not manager
            assert loaded.credentials == manager.credentials
            assert loaded.timeout == 20.0 and loaded.policy == policy
            answer = loaded.request(
                "POST", "/api/transactions/charges", json={**CHARGE, "amount": 9}
            )
            assert answer.status == 200 and answer.data["amount"] == 9


def test_an_async_from_env_manager_pickles_too(https_server: SandboxServer, ca_file: str) -> None:
    async def main() -> None:
        async with AsyncTokenManager.from_env(ca_bundle=ca_file) as manager:
            token = await manager.get_token()
            data = pickle.dumps(manager)
            assert token.access_token.encode() not in data and DEFAULT_API_KEY.encode() not in data
            async with pickle.loads(data) as loaded:
                assert isinstance(loaded, AsyncTokenManager)
                assert (await loaded.get_token()).expires_at > 0

    asyncio.run(main())


def test_a_manager_built_with_its_key_refuses_naming_the_fix(https_server: SandboxServer) -> None:
    with TokenManager(DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, store=MemoryStore()) as manager:
        with pytest.raises(NotPicklable, match=r"from_env\(\)") as refused:
            pickle.dumps(manager)
        assert isinstance(refused.value, TypeError)
        assert DEFAULT_API_KEY not in str(refused.value)


def test_from_env_with_a_mapping_or_an_object_option_refuses(ca_file: str) -> None:
    environ = {
        "EIGHTY_EIGHT_PAY_API_KEY": DEFAULT_API_KEY,
        "EIGHTY_EIGHT_PAY_MERCHANT_ID": DEFAULT_MERCHANT_ID,
    }
    with TokenManager.from_env(environ) as manager, pytest.raises(NotPicklable, match="mapping"):
        pickle.dumps(manager)
    object_option = pytest.raises(NotPicklable, match=r"store= set to an object \(MemoryStore\)")
    with TokenManager.from_env(store=MemoryStore(), ca_bundle=ca_file) as manager, object_option:
        pickle.dumps(manager)


def test_auth_objects_refuse_naming_the_fix(ca_file: str) -> None:
    with TokenManager.from_env(ca_bundle=ca_file) as manager:
        for auth in (EightyEightPayAuth(manager), EightyEightPayRequestsAuth(manager)):
            with pytest.raises(NotPicklable, match=r"TokenManager.from_env\(\)"):
                pickle.dumps(auth)
