"""uvicorn, 2 workers, a Starlette app owning an AsyncTokenManager in its lifespan and an
app-wide httpx.AsyncClient authenticated by it.

400 concurrent charges with distinct amounts over HTTP, half through ``request()`` and half
through httpx: every answer echoes its own amount, no errors, at most one token request per
worker with the memory store and exactly one with the Redis store.
"""

from __future__ import annotations

import pytest

from tests.frameworks.support import (
    check_burst,
    check_stopped_cleanly,
    environ,
    python,
    redis_server,
    sandbox_server,
    serve_burst,
)
from tests.servers import free_port

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
    with sandbox_server() as server, redis_server(store == "redis") as redis:
        port = free_port()
        command = uvicorn(port, "tests.frameworks.apps.asgi_app:app")
        served = serve_burst(command, environ(server, redis), port, ["/charges", "/charges/httpx"])
        stats = server.sandbox.stats()
    name = "uvicorn --workers 2, Starlette lifespan"
    check_burst(name, served.answers, stats, store=store, most_workers=WORKERS, log=served.log)
    # Each worker ran its lifespan to the end: the manager and the client were closed.
    check_stopped_cleanly(served)
    assert served.log.count("Application shutdown complete") == WORKERS, served.log
