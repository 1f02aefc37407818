"""Mistakes a new user makes in Python, each refused at once with a typed error that says why."""

from __future__ import annotations

import asyncio
import pathlib
import subprocess
import sys
from typing import Any

import pytest
import trio

import eightyeightpay
from eightyeightpay import (
    DEFAULT_API_KEY,
    DEFAULT_MERCHANT_ID,
    AsyncTokenManager,
    ConfigurationError,
    InvalidCredentials,
    MalformedCredentials,
    MemoryStore,
    SandboxServer,
    TokenManager,
    open_trio_token_manager,
)
from eightyeightpay.adapters.pytest_plugin import FakeWorld


@pytest.mark.parametrize("kind", ["missing", "directory", "not pem"])
def test_an_unusable_ca_bundle_is_refused_when_the_manager_is_built(
    kind: str, tmp_path: pathlib.Path
) -> None:
    bundle = {
        "missing": tmp_path / "nowhere.pem",
        "directory": tmp_path,
        "not pem": tmp_path / "notes.txt",
    }[kind]
    if kind == "not pem":
        bundle.write_text("not a certificate\n")
    for build in (TokenManager, AsyncTokenManager):
        with pytest.raises(ConfigurationError, match=r"ca_bundle=.*cannot be used") as caught:
            build(DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, ca_bundle=str(bundle))
        assert DEFAULT_API_KEY not in str(caught.value)


@pytest.mark.parametrize("timeout", [0, -1, float("nan")])
def test_a_timeout_that_is_not_positive_is_refused(timeout: float) -> None:
    with pytest.raises(ConfigurationError, match="positive number of seconds"):
        TokenManager(DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, timeout=timeout)


def test_errors_leave_the_trio_manager_as_themselves_not_in_a_group() -> None:
    async def malformed() -> None:
        async with open_trio_token_manager("hello", DEFAULT_MERCHANT_ID):
            pass

    with pytest.raises(MalformedCredentials):
        trio.run(malformed)

    with SandboxServer(tls=True) as server:
        assert server.certificates is not None
        ca_file = str(server.certificates.ca_file)

        async def wrong_key() -> None:
            async with open_trio_token_manager(
                "sk_test_wrongwrongwrong1",
                DEFAULT_MERCHANT_ID,
                base_url=server.url,
                ca_bundle=ca_file,
                store=eightyeightpay.MemoryStore(),
            ) as manager:
                await manager.get_token()

        with pytest.raises(InvalidCredentials):
            trio.run(wrong_key)


def test_dir_shows_the_public_names_only() -> None:
    shown = dir(eightyeightpay)
    assert set(shown) == {*eightyeightpay.__all__, "__version__"}
    assert "importlib" not in shown and "machine" not in shown


def test_a_missing_optional_package_names_the_extra_to_install() -> None:
    probe = (
        "import sys; sys.modules['httpx'] = None\n"
        "try:\n"
        "    from eightyeightpay import EightyEightPayAuth\n"
        "except ModuleNotFoundError as error:\n"
        "    print(error)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert "pip install 'eightyeightpay[httpx]'" in out


def test_api_limits_from_the_environment_reach_the_policy() -> None:
    environ = {
        "EIGHTY_EIGHT_PAY_API_KEY": DEFAULT_API_KEY,
        "EIGHTY_EIGHT_PAY_MERCHANT_ID": DEFAULT_MERCHANT_ID,
        "EIGHTY_EIGHT_PAY_API_PER_MINUTE": "600",
        "EIGHTY_EIGHT_PAY_API_PER_HOUR": "10000",
    }
    with TokenManager.from_env(environ, store=eightyeightpay.MemoryStore()) as manager:
        assert (manager.policy.api_per_minute, manager.policy.api_per_hour) == (600, 10000)
    given = eightyeightpay.Policy(margin=12.0)
    with TokenManager.from_env(environ, store=eightyeightpay.MemoryStore(), policy=given) as kept:
        assert kept.policy.margin == 12.0 and kept.policy.api_per_minute == 600
    del environ["EIGHTY_EIGHT_PAY_API_PER_HOUR"]
    with TokenManager.from_env(environ, store=eightyeightpay.MemoryStore()) as default_hour:
        assert default_hour.policy.api_per_hour == 1000  # 88Pay's, where not raised


@pytest.mark.parametrize("value", ["0", "-5", "sixty", "1.5"])
def test_a_malformed_api_limit_variable_is_refused(value: str) -> None:
    environ = {
        "EIGHTY_EIGHT_PAY_API_KEY": DEFAULT_API_KEY,
        "EIGHTY_EIGHT_PAY_MERCHANT_ID": DEFAULT_MERCHANT_ID,
        "EIGHTY_EIGHT_PAY_API_PER_MINUTE": value,
    }
    with pytest.raises(ConfigurationError, match="EIGHTY_EIGHT_PAY_API_PER_MINUTE"):
        TokenManager.from_env(environ)


BAD_DEADLINES: list[object] = [float("nan"), "5", -1, True]
BAD_BODIES: list[object] = [
    {1, 2},
    {"a": object()},
    {"amount": float("nan")},
    {"amount": float("inf")},
    b"x",
]
CHARGE_PATH = "/api/transactions/charges"


def test_a_mistaken_deadline_or_body_is_refused_on_every_path_threads(
    eightyeightpay_fake: FakeWorld,
) -> None:
    sandbox = eightyeightpay_fake.sandbox
    with eightyeightpay_fake.manager() as manager:
        for deadline in BAD_DEADLINES:  # on a cold cache, which needs a token request
            with pytest.raises(ConfigurationError, match="deadline must be"):
                manager.get_token(deadline=deadline)  # type: ignore[arg-type]
        manager.get_token()
        for deadline in BAD_DEADLINES:  # and with a token cached, served without one
            with pytest.raises(ConfigurationError, match="deadline must be"):
                manager.get_token(deadline=deadline)  # type: ignore[arg-type]
        for body in BAD_BODIES:
            with pytest.raises(ConfigurationError, match="json= cannot be sent") as caught:
                manager.request("POST", CHARGE_PATH, json=body)
            assert isinstance(caught.value, ValueError)
        with pytest.raises(ConfigurationError, match="NaN or an infinity"):
            manager.request("POST", CHARGE_PATH, json={"amount": float("nan")})
        assert manager.get_token(deadline=0) == manager.get_token(deadline=2.5)
    assert sandbox.stats()["token_requests"] == 1
    assert sandbox.stats()["api_requests"] == 0  # nothing of the mistaken bodies was sent


def test_a_mistaken_deadline_or_body_is_refused_on_every_path_async() -> None:
    with SandboxServer(tls=True) as server:
        assert server.certificates is not None
        url, ca_file = server.url, str(server.certificates.ca_file)

        async def exercise(manager: AsyncTokenManager) -> None:
            await manager.get_token()
            for deadline in BAD_DEADLINES:
                with pytest.raises(ConfigurationError, match="deadline must be"):
                    await manager.get_token(deadline=deadline)  # type: ignore[arg-type]
            for body in BAD_BODIES:
                with pytest.raises(ConfigurationError, match="json= cannot be sent"):
                    await manager.request("POST", CHARGE_PATH, json=body)

        async def on(opener: Any) -> None:  # AsyncTokenManager, or trio's opener
            async with opener(
                DEFAULT_API_KEY,
                DEFAULT_MERCHANT_ID,
                base_url=url,
                ca_bundle=ca_file,
                store=MemoryStore(),
            ) as manager:
                await exercise(manager)

        asyncio.run(on(AsyncTokenManager))
        trio.run(on, open_trio_token_manager)
        assert server.sandbox.stats()["api_requests"] == 0
