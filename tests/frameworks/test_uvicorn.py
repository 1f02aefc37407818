"""uvicorn, 2 workers, a Starlette app owning an AsyncTokenManager in its lifespan and an
app-wide httpx.AsyncClient authenticated by it.

400 concurrent charges with distinct amounts over HTTP, half through ``request()`` and half
through httpx: every answer echoes its own amount, no errors, at most one token request per
worker with the memory store and exactly one with the Redis store.
"""

from __future__ import annotations

import pytest

from tests.frameworks.support import check_server_burst, python

WORKERS = 2


def uvicorn(port: int, app: str) -> list[str]:
    return python(
        "-m",
        "uvicorn",
        "--workers",
        str(WORKERS),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-access-log",
        "--timeout-graceful-shutdown",
        "5",
        app,
    )


@pytest.mark.parametrize("store", ["memory", "redis"])
def test_uvicorn_two_workers_lifespan_manager_and_httpx_auth(store: str) -> None:
    served, _, _ = check_server_burst(
        "uvicorn --workers 2, Starlette lifespan",
        lambda port: uvicorn(port, "tests.frameworks.apps.asgi_app:app"),
        ["/charges", "/charges/httpx"],
        store=store,
        most_workers=WORKERS,
    )
    # Each worker ran its lifespan to the end: the manager and the client were closed.
    assert served.log.count("Application shutdown complete") == WORKERS, served.log
