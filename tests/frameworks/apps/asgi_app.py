"""A Starlette app that owns an AsyncTokenManager in its lifespan (docs/frameworks.md, "uvicorn").

    uvicorn --workers 2 tests.frameworks.apps.asgi_app:app

``POST /charges`` charges through the manager's ``request()``; ``POST /charges/httpx`` through
an app-wide ``httpx.AsyncClient`` whose auth is the same manager. Configured from the
environment (``EIGHTY_EIGHT_PAY_*``); with ``EIGHTY_EIGHT_PAY_REDIS_URL`` set, every worker of
every host shares one token through Redis.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TypedDict

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from eightyeightpay import AsyncTokenManager, EightyEightPayAuth, EightyEightPayError
from tests.frameworks.apps.charges import CHARGES_PATH, pse_charge


class State(TypedDict):
    """What the lifespan hands every request (``request.state``)."""

    payments: AsyncTokenManager
    client: httpx.AsyncClient


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[State]:
    """One manager and one httpx client per worker process, closed when the worker stops."""
    store = "redis" if os.environ.get("EIGHTY_EIGHT_PAY_REDIS_URL") else "memory"
    async with (
        AsyncTokenManager.from_env(store=store) as payments,
        httpx.AsyncClient(
            base_url=payments.credentials.base_url,
            auth=EightyEightPayAuth(payments),
            timeout=30.0,
        ) as client,
    ):
        yield {"payments": payments, "client": client}


async def charge(request: Request) -> JSONResponse:
    """Charge with ``AsyncTokenManager.request()``."""
    payments: AsyncTokenManager = request.state.payments
    amount = (await request.json())["amount"]
    try:
        answer = await payments.request("POST", CHARGES_PATH, json=pse_charge(amount))
    except EightyEightPayError as error:
        # Never sent twice by the library when it may have reached 88Pay: look it up first.
        return JSONResponse({"error": str(error)}, status_code=502)
    if not answer.ok:
        return JSONResponse({"error": answer.message}, status_code=502)
    return JSONResponse({"charge": answer.data, "pid": os.getpid()})


async def charge_with_httpx(request: Request) -> JSONResponse:
    """Charge with the app's httpx client: the auth adds the token and session headers."""
    client: httpx.AsyncClient = request.state.client
    amount = (await request.json())["amount"]
    try:
        response = await client.post(CHARGES_PATH, json=pse_charge(amount))
    except (httpx.HTTPError, EightyEightPayError) as error:
        return JSONResponse({"error": str(error)}, status_code=502)
    if response.status_code != 200:
        return JSONResponse({"error": response.json().get("message")}, status_code=502)
    return JSONResponse({"charge": response.json()["data"], "pid": os.getpid()})


async def healthz(request: Request) -> JSONResponse:
    """Answers without charging."""
    return JSONResponse({"pid": os.getpid()})


app = Starlette(
    routes=[
        Route("/charges", charge, methods=["POST"]),
        Route("/charges/httpx", charge_with_httpx, methods=["POST"]),
        Route("/healthz", healthz),
    ],
    lifespan=lifespan,
)
