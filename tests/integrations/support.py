"""What the integration tests share: paths, a charge, counters, and a sync client of each kind."""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Iterator
from typing import Any

import httpx
import requests

from eightyeightpay.adapters.integrations.httpx_auth import EightyEightPayAuth
from eightyeightpay.adapters.integrations.requests_auth import EightyEightPayRequestsAuth
from eightyeightpay.adapters.sync import TokenManager
from eightyeightpay.plugins.sandbox import DEFAULT_MERCHANT_ID, SandboxServer

BALANCE = f"/api/balance?id={DEFAULT_MERCHANT_ID}"
CHARGES = "/api/transactions/charges"
CHARGE: dict[str, Any] = {
    "flow": "PAYIN",
    "method_code": "PSE",
    "amount": 25000,
    "currency": "COP",
    "country": "COL",
}
RAW_BODY_KEYWORD = {"httpx": "content", "requests": "data"}
"""The keyword each client takes a raw request body by."""
TRANSPORT_ERRORS: dict[str, type[Exception]] = {
    "httpx": httpx.TransportError,
    "requests": requests.ConnectionError,
}


def stat(server: SandboxServer, name: str) -> int:
    return server.sandbox.stats()[name]


def trust(server: SandboxServer) -> ssl.SSLContext:
    assert server.certificates is not None
    return ssl.create_default_context(cafile=str(server.certificates.ca_file))


def requests_session(server: SandboxServer, manager: TokenManager) -> requests.Session:
    assert server.certificates is not None
    session = requests.Session()
    session.auth = EightyEightPayRequestsAuth(manager)
    session.verify = str(server.certificates.ca_file)
    session.trust_env = False  # else REQUESTS_CA_BUNDLE in the environment overrides verify
    return session


@contextlib.contextmanager
def sync_client(kind: str, server: SandboxServer, manager: TokenManager) -> Iterator[Any]:
    """An httpx.Client or a requests.Session authenticated by ``manager``; both take
    ``client.post(absolute_url, json=...)`` and answer with ``status_code`` and ``history``."""
    if kind == "httpx":
        with httpx.Client(auth=EightyEightPayAuth(manager), verify=trust(server)) as client:
            yield client
    else:
        with requests_session(server, manager) as session:
            yield session
