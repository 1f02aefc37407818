"""A WSGI app that charges per HTTP request, for gunicorn (docs/frameworks.md, "gunicorn").

    gunicorn --preload --workers 4 tests.frameworks.apps.wsgi_app:app

Configured from the environment: ``EIGHTY_EIGHT_PAY_API_KEY``, ``EIGHTY_EIGHT_PAY_MERCHANT_ID``
(and ``EIGHTY_EIGHT_PAY_BASE_URL``); with ``EIGHTY_EIGHT_PAY_REDIS_URL`` set, every worker of
every host shares one token through Redis.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from typing import Any

from eightyeightpay import EightyEightPayError, TokenManager
from tests.frameworks.apps.charges import CHARGES_PATH, pse_charge

# Made once, at import time: with --preload that is in the gunicorn master, before the
# workers fork. Building it sends nothing; each worker gets its own connections and refresh
# thread on first use, and a token cached in one process is valid in all of them.
payments = TokenManager.from_env(
    store="redis" if os.environ.get("EIGHTY_EIGHT_PAY_REDIS_URL") else "memory"
)

# Optional: take a token now, in the master. The workers inherit it (a token is valid in any
# process) and start without a token request of their own; each still opens its own
# connections, so no worker ever reads another's answer.
if os.environ.get("PAYMENTS_WARM_UP") == "1":
    payments.get_token()


def charge(amount: float) -> dict[str, Any]:
    """Create a charge of ``amount``; the charge's data, or the API's error."""
    answer = payments.request("POST", CHARGES_PATH, json=pse_charge(amount))
    if not answer.ok:
        raise RuntimeError(f"88Pay answered {answer.status}: {answer.message}")
    return dict(answer.data)


StartResponse = Callable[[str, list[tuple[str, str]]], Any]


def respond(start_response: StartResponse, status: str, body: object) -> Iterable[bytes]:
    """A JSON answer."""
    data = json.dumps(body).encode()
    start_response(
        status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
    )
    return [data]


def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """``POST /charges {"amount": N}`` charges N; ``GET /healthz`` answers without charging."""
    route = (environ["REQUEST_METHOD"], environ["PATH_INFO"])
    if route == ("GET", "/healthz"):
        return respond(start_response, "200 OK", {"pid": os.getpid()})
    if route != ("POST", "/charges"):
        return respond(start_response, "404 Not Found", {"error": "not found"})
    size = int(environ.get("CONTENT_LENGTH") or 0)
    amount = json.loads(environ["wsgi.input"].read(size))["amount"]
    try:
        data = charge(amount)
    except (EightyEightPayError, RuntimeError) as error:
        # A charge that may have reached 88Pay is never sent again by the library: look it
        # up before retrying (error.may_have_been_sent says which).
        return respond(start_response, "502 Bad Gateway", {"error": str(error)})
    return respond(start_response, "200 OK", {"charge": data, "pid": os.getpid()})
