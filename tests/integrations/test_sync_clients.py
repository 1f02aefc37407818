"""The headers and the replay rules, identical for httpx.Client and requests.Session, over
real TLS sockets."""

from __future__ import annotations

import json

import pytest

from eightyeightpay import ConfigurationError
from eightyeightpay.adapters.sync import TokenManager
from eightyeightpay.plugins.sandbox import DEFAULT_MERCHANT_ID, Fault, SandboxServer
from tests.integrations.support import (
    BALANCE,
    CHARGE,
    CHARGES,
    RAW_BODY_KEYWORD,
    TRANSPORT_ERRORS,
    stat,
    sync_client,
)

pytestmark = pytest.mark.parametrize("kind", ["httpx", "requests"])


def test_headers_are_sent_and_accepted(
    kind: str, https_server: SandboxServer, https_manager: TokenManager
) -> None:
    raw = {RAW_BODY_KEYWORD[kind]: json.dumps(CHARGE).encode()}
    with sync_client(kind, https_server, https_manager) as client:
        balance = client.post(https_server.url + BALANCE)
        charge = client.post(https_server.url + CHARGES, **raw)
    assert balance.status_code == 200
    assert balance.json()["data"]["merchant_id"] == DEFAULT_MERCHANT_ID
    assert charge.status_code == 200
    assert charge.json()["data"]["transaction_id"].startswith("txn_")
    token = https_manager.get_token()
    sent = charge.request.headers
    assert sent["Authorization"] == f"Bearer {token.access_token}"
    assert sent["x-session-id"] == token.session_id
    assert sent["Content-Type"] == "application/json"  # added: the raw body had no type
    assert "Content-Type" not in balance.request.headers  # no body, no content type
    assert stat(https_server, "token_requests") == 1
    assert stat(https_server, "charges") == 1


def test_a_content_type_of_the_caller_is_kept(
    kind: str, https_server: SandboxServer, https_manager: TokenManager
) -> None:
    raw = {RAW_BODY_KEYWORD[kind]: json.dumps(CHARGE).encode()}
    with sync_client(kind, https_server, https_manager) as client:
        charge = client.post(
            https_server.url + CHARGES, headers={"Content-Type": "text/json"}, **raw
        )
    assert charge.status_code == 200 and charge.request.headers["Content-Type"] == "text/json"


def test_a_401_is_replayed_once_with_a_new_token(
    kind: str, https_server: SandboxServer, https_manager: TokenManager
) -> None:
    first = https_manager.get_token()
    https_server.sandbox.inject(Fault.status(401), path="/api/balance")
    with sync_client(kind, https_server, https_manager) as client:
        response = client.post(https_server.url + BALANCE)
    assert response.status_code == 200
    assert [r.status_code for r in response.history] == [401]
    fresh = https_manager.get_token()
    assert fresh != first
    assert response.request.headers["Authorization"] == f"Bearer {fresh.access_token}"
    assert stat(https_server, "api_requests") == 2
    assert stat(https_server, "token_requests") == 2


def test_a_charge_rejected_with_401_is_replayed_with_its_body(
    kind: str, https_server: SandboxServer, https_manager: TokenManager
) -> None:
    https_server.sandbox.inject(Fault.status(401), path=CHARGES)
    with sync_client(kind, https_server, https_manager) as client:
        response = client.post(https_server.url + CHARGES, json=CHARGE)
    assert response.status_code == 200 and response.json()["data"]["amount"] == 25000
    assert stat(https_server, "api_requests") == 2
    assert stat(https_server, "token_requests") == 2
    assert stat(https_server, "charges") == 1  # the 401 was answered before processing


def test_a_401_on_every_attempt_is_returned_after_one_replay(
    kind: str, https_server: SandboxServer, https_manager: TokenManager
) -> None:
    https_server.sandbox.inject(Fault.status(401), path="/api/balance", times=5)
    with sync_client(kind, https_server, https_manager) as client:
        response = client.post(https_server.url + BALANCE)
    assert response.status_code == 401
    assert len(response.history) == 1
    assert stat(https_server, "api_requests") == 2
    assert stat(https_server, "token_requests") == 2
    assert https_server.sandbox.pending_faults() == 3


def test_a_reset_charge_raises_and_is_not_sent_again(
    kind: str, https_server: SandboxServer, https_manager: TokenManager
) -> None:
    https_server.sandbox.inject(Fault.reset(), path=CHARGES)
    with (
        sync_client(kind, https_server, https_manager) as client,
        pytest.raises(TRANSPORT_ERRORS[kind]),
    ):
        client.post(https_server.url + CHARGES, json=CHARGE)
    assert stat(https_server, "api_requests") == 1
    assert stat(https_server, "charges") == 1  # processed before the reset: look it up


def test_another_host_gets_no_token(
    kind: str, https_server: SandboxServer, https_manager: TokenManager
) -> None:
    other = https_server.url.replace("127.0.0.1", "localhost")
    assert other != https_server.url
    with (
        sync_client(kind, https_server, https_manager) as client,
        pytest.raises(ConfigurationError),
    ):
        client.post(other + BALANCE)
    assert stat(https_server, "token_requests") == 0
    assert stat(https_server, "api_requests") == 0
