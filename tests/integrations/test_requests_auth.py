"""EightyEightPayRequestsAuth with requests over real TLS sockets against the loopback
emulator."""

from __future__ import annotations

import io
import json
import threading

import pytest
import requests
from requests.hooks import dispatch_hook

from eightyeightpay import ConfigurationError
from eightyeightpay.adapters.integrations import check_origin, same_origin
from eightyeightpay.adapters.integrations.requests_auth import EightyEightPayRequestsAuth
from eightyeightpay.adapters.sync import TokenManager
from eightyeightpay.plugins.sandbox import (
    DEFAULT_API_KEY,
    Fault,
    SandboxServer,
)
from tests.integrations.support import (
    BALANCE,
    CHARGE,
    CHARGES,
    requests_session,
    stat,
)


def session(server: SandboxServer, manager: TokenManager) -> requests.Session:
    return requests_session(server, manager)


def test_auth_per_call_without_a_session(
    https_server: SandboxServer, https_manager: TokenManager
) -> None:
    assert https_server.certificates is not None
    response = requests.post(
        https_server.url + CHARGES,
        json=CHARGE,
        auth=EightyEightPayRequestsAuth(https_manager),
        verify=str(https_server.certificates.ca_file),
        timeout=30,
    )
    assert response.status_code == 200 and response.json()["data"]["status"] == "PENDING"


def test_a_401_is_replayed_once_with_a_new_token(
    https_server: SandboxServer, https_manager: TokenManager
) -> None:
    first = https_manager.get_token()
    https_server.sandbox.inject(Fault.status(401), path="/api/balance")
    with session(https_server, https_manager) as s:
        response = s.post(https_server.url + BALANCE)
        again = s.post(https_server.url + BALANCE)  # the connection is still usable
    assert response.status_code == 200 and again.status_code == 200
    assert [r.status_code for r in response.history] == [401]
    assert response.history[0].request.headers["Authorization"] == f"Bearer {first.access_token}"
    fresh = https_manager.get_token()
    assert fresh != first
    assert response.request.headers["Authorization"] == f"Bearer {fresh.access_token}"
    assert response.request.headers["x-session-id"] == fresh.session_id
    assert stat(https_server, "api_requests") == 3
    assert stat(https_server, "token_requests") == 2


def test_a_file_body_is_rewound_for_the_replay(
    https_server: SandboxServer, https_manager: TokenManager
) -> None:
    https_server.sandbox.inject(Fault.status(401), path=CHARGES)
    with session(https_server, https_manager) as s:
        response = s.post(https_server.url + CHARGES, data=io.BytesIO(json.dumps(CHARGE).encode()))
    assert response.status_code == 200 and response.json()["data"]["amount"] == 25000
    assert stat(https_server, "api_requests") == 2
    assert stat(https_server, "charges") == 1


def test_a_streamed_body_is_not_replayed(
    https_server: SandboxServer, https_manager: TokenManager
) -> None:
    first = https_manager.get_token()
    https_server.sandbox.inject(Fault.status(401), path=CHARGES)
    with session(https_server, https_manager) as s:
        response = s.post(https_server.url + CHARGES, data=iter([json.dumps(CHARGE).encode()]))
    assert response.status_code == 401  # a consumed generator cannot be sent again
    assert stat(https_server, "api_requests") == 1
    assert https_manager.get_token() != first  # but the rejected token is dropped


def test_threads_sharing_one_auth_replay_their_own_401(
    https_server: SandboxServer, https_manager: TokenManager
) -> None:
    https_manager.get_token()
    https_server.sandbox.inject(Fault.status(401), path="/api/balance", times=4)
    auth = EightyEightPayRequestsAuth(https_manager)
    responses: list[requests.Response] = []

    def call() -> None:
        with session(https_server, https_manager) as s:
            s.auth = auth
            responses.append(s.post(https_server.url + BALANCE))

    threads = [threading.Thread(target=call) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Which requests meet the 4 faults depends on the interleaving; what holds for each is
    # that it was sent at most twice, and a 401 is returned only after its one replay.
    assert len(responses) == 4 and https_server.sandbox.pending_faults() == 0
    assert all(len(r.history) <= 1 for r in responses)
    assert all(len(r.history) == 1 for r in responses if r.status_code == 401)
    assert stat(https_server, "api_requests") == sum(1 + len(r.history) for r in responses)
    assert stat(https_server, "token_requests") <= 1 + 4


def test_no_secret_in_repr_or_errors(
    https_server: SandboxServer, https_manager: TokenManager
) -> None:
    auth = EightyEightPayRequestsAuth(https_manager)
    token = https_manager.get_token()
    texts = [repr(auth), str(auth)]
    https_server.sandbox.inject(Fault.reset(), path=CHARGES)
    with session(https_server, https_manager) as s:
        for url in (https_server.url + CHARGES, "https://elsewhere.test/x"):
            with pytest.raises(Exception) as caught:
                s.post(url, json=CHARGE)
            texts += [str(caught.value), repr(caught.value)]
    for text in texts:
        for secret in (DEFAULT_API_KEY, token.access_token, token.session_id):
            assert secret not in text


def test_the_constructor_takes_a_token_manager_only() -> None:
    with pytest.raises(TypeError, match="TokenManager"):
        EightyEightPayRequestsAuth(object())  # type: ignore[arg-type]


def test_a_401_from_another_host_after_a_redirect_is_not_replayed(
    https_server: SandboxServer, https_manager: TokenManager
) -> None:
    # requests copies the response hooks to a redirect's request: what a redirect to another
    # host answers must neither drop our token nor make us send it there.
    prepared = requests.Request("POST", https_server.url + BALANCE).prepare()
    prepared = EightyEightPayRequestsAuth(https_manager)(prepared)
    token = https_manager.get_token()
    elsewhere = requests.Response()
    elsewhere.status_code, elsewhere.url = 401, "https://elsewhere.test/api/balance"
    assert dispatch_hook("response", prepared.hooks, elsewhere) is elsewhere
    assert https_manager.get_token() is token
    assert stat(https_server, "api_requests") == 0


def test_origins_compare_scheme_host_and_port() -> None:
    base = "https://api-sandbox.88pay.io"
    assert same_origin("https://API-SANDBOX.88pay.io:443/api/balance?id=x", base)
    assert not same_origin("http://api-sandbox.88pay.io/api/balance", base)
    assert not same_origin("https://api-sandbox.88pay.io:8443/api/balance", base)
    assert not same_origin("https://api.88pay.io/api/balance", base)
    with pytest.raises(ConfigurationError, match=r"elsewhere\.test"):
        check_origin("https://elsewhere.test/x", base)
