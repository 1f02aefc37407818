"""A fleet store that refuses the process's configuration (a wrong or missing password, a
database that does not exist, a TLS file that is missing) is a mistake to fix, not an
outage to ride out: one ERROR with the fix and no secret, the process working alone within
its share meanwhile."""

from __future__ import annotations

import logging
import urllib.parse
from collections.abc import Callable, Iterator

import pytest

from eightyeightpay import RateLimited, Token, TokenManager
from eightyeightpay.plugins.redis_store import RedisStore
from eightyeightpay.plugins.sandbox import DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, SandboxServer
from tests.servers import RedisServer, TlsAclRedis, running

WRONG = "Wr0ngPassw0rdXYZ"


@pytest.fixture(scope="module")
def tls_redis() -> Iterator[TlsAclRedis]:
    with running(TlsAclRedis()) as server:
        yield server


@pytest.fixture(scope="module")
def plain_redis() -> Iterator[RedisServer]:
    with running(RedisServer()) as server:
        yield server


def _url(server: TlsAclRedis, password: str | None) -> str:
    ca = urllib.parse.quote(str(server.certificates.ca_file))
    who = "" if password is None else f"{server.user}:{urllib.parse.quote(password, safe='')}@"
    return f"rediss://{who}127.0.0.1:{server.port}/0?ssl_ca_certs={ca}"


Case = tuple[Callable[[TlsAclRedis, RedisServer], str], str, str]
CASES: dict[str, Case] = {
    "wrong-password": (lambda t, p: _url(t, WRONG), "AuthenticationError", "refused the password"),
    "no-password": (lambda t, p: _url(t, None), "Error", "refused the password"),
    "no-such-db": (lambda t, p: p.url.removesuffix("/0") + "/99", "ResponseError", "(/N)"),
    "missing-ca-file": (
        lambda t, p: f"rediss://127.0.0.1:{t.port}/0?ssl_ca_certs=/nonexistent-ca.pem",
        "ConnectionError",
        "missing or unreadable",
    ),
    "tls-option-on-redis-url": (
        lambda t, p: p.url + "?ssl_ca_certs=/nonexistent-ca.pem",
        "TypeError",
        "need a rediss:// URL",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_configuration_mistake_is_one_error_with_its_fix(
    case: str,
    tls_redis: TlsAclRedis,
    plain_redis: RedisServer,
    https_server: SandboxServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    make_url, kind, fix = CASES[case]
    caplog.set_level(logging.DEBUG, logger="eightyeightpay")
    assert https_server.certificates is not None
    with TokenManager(
        DEFAULT_API_KEY,
        DEFAULT_MERCHANT_ID,
        base_url=https_server.url,
        ca_bundle=str(https_server.certificates.ca_file),
        store=RedisStore(make_url(tls_redis, plain_redis)),
    ) as manager:
        token = manager.get_token()  # no error reaches the caller: the process works alone
        assert isinstance(token, Token)
        manager.invalidate(token)
        with pytest.raises(RateLimited) as refused:  # a second flight, a second fault
            manager.get_token(deadline=0)
        stats = manager.stats()
    # The fleet's size is unknown: a share of 1 token a minute, refused here, never a 429.
    assert refused.value.local
    assert stats.store_mode == "degraded" and stats.token_requests == 1
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    message = errors[0].getMessage()
    assert "redis store refused this process's configuration" in message
    assert kind in message and fix in message
    assert not [r for r in caplog.records if "store unavailable" in r.getMessage()]
    for secret in (WRONG, tls_redis.password, token.access_token, "nonexistent-ca"):
        assert secret not in caplog.text


def test_an_outage_is_not_a_configuration_mistake(caplog: pytest.LogCaptureFixture) -> None:
    """A closed port may be a restart: one WARNING, as before, and no ERROR."""
    caplog.set_level(logging.DEBUG, logger="eightyeightpay")
    store = RedisStore("redis://:hunter2@127.0.0.1:1/9")
    assert store.misconfiguration(ConnectionRefusedError()) is None
    store.health.failed("ConnectionError", store.misconfiguration(ConnectionRefusedError()))
    store.health.failed("ConnectionError", None)
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert "hunter2" not in caplog.text
