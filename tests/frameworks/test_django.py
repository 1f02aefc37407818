"""Django: settings hold the configuration, one manager per process is made lazily, sync and
async views charge; tested with Django's test client in this process and under gunicorn.
"""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import django
import pytest
from django.test import AsyncClient, Client, override_settings

from eightyeightpay import DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, Policy
from tests.frameworks.support import (
    BURST_API_ENVIRON,
    CHARGES,
    Answer,
    check_burst,
    check_server_burst,
    sandbox_server,
)
from tests.frameworks.test_gunicorn import WORKERS, gunicorn
from tests.frameworks.test_uvicorn import uvicorn

SETTINGS = "tests.frameworks.apps.django_site.settings"


def read(amount: int, response: Any) -> Answer:
    return Answer(amount, response.status_code, json.loads(response.content))


def test_django_test_client_sync_and_async_views(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", SETTINGS)
    django.setup()
    half = CHARGES // 2
    with sandbox_server() as server:
        assert server.certificates is not None
        config = {
            "API_KEY": DEFAULT_API_KEY,
            "MERCHANT_ID": DEFAULT_MERCHANT_ID,
            "BASE_URL": server.url,
            "STORE": "memory",
            "OPTIONS": {
                "ca_bundle": str(server.certificates.ca_file),
                # the emulator's API budget is raised for the burst: the governor's too
                "policy": Policy(
                    api_per_minute=int(BURST_API_ENVIRON["EIGHTY_EIGHT_PAY_API_PER_MINUTE"]),
                    api_per_hour=int(BURST_API_ENVIRON["EIGHTY_EIGHT_PAY_API_PER_HOUR"]),
                ),
            },
        }
        with override_settings(EIGHTY_EIGHT_PAY=config):

            def sync_charge(amount: int) -> Answer:
                response = Client().post(
                    "/charges", {"amount": amount}, content_type="application/json"
                )
                return read(amount, response)

            with ThreadPoolExecutor(16) as pool:
                answers = list(pool.map(sync_charge, range(1, half + 1)))

            async def async_charges(amounts: range) -> list[Answer]:
                client = AsyncClient()

                async def one(amount: int) -> Answer:
                    response = await client.post(
                        "/charges/async", {"amount": amount}, content_type="application/json"
                    )
                    return read(amount, response)

                return list(await asyncio.gather(*(one(amount) for amount in amounts)))

            # Two event loops one after the other, as successive async tests have: the
            # process's asyncio manager serves both.
            answers += asyncio.run(async_charges(range(half + 1, half + half // 2 + 1)))
            answers += asyncio.run(async_charges(range(half + half // 2 + 1, CHARGES + 1)))
        stats = server.sandbox.stats()
    check_burst(
        "Django test client, sync and async views", answers, stats, store="memory", most_workers=1
    )


@pytest.mark.parametrize("store", ["memory", "redis"])
def test_django_under_gunicorn_preload_four_workers(store: str) -> None:
    # Under WSGI, Django runs each async view in an event loop of its own (asgiref's
    # async_to_sync): the process's AsyncTokenManager serves a new loop on every request.
    check_server_burst(
        "Django under gunicorn --preload -w 4, sync and async views",
        lambda port: gunicorn(port, "sync", "tests.frameworks.apps.django_site.wsgi"),
        ["/charges", "/charges/async"],
        store=store,
        most_workers=WORKERS,
    )


@pytest.mark.parametrize("store", ["memory", "redis"])
def test_django_under_uvicorn_two_workers(store: str) -> None:
    # Under ASGI, async views run on the worker's one event loop; sync views in a thread.
    check_server_burst(
        "Django under uvicorn --workers 2, sync and async views",
        lambda port: uvicorn(port, "tests.frameworks.apps.django_site.asgi:application"),
        ["/charges", "/charges/async"],
        store=store,
        most_workers=2,
    )
