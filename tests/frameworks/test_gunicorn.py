"""gunicorn --preload, 4 workers (sync and gthread), a manager made at import time.

400 concurrent charges with distinct amounts over HTTP: every answer echoes its own amount,
no errors, at most one token request per worker with the memory store and exactly one with
the Redis store.
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

WORKERS = 4


def gunicorn(port: int, worker_class: str, app: str) -> list[str]:
    return python(
        "-m",
        "gunicorn",
        "--preload",
        "--workers",
        str(WORKERS),
        "--worker-class",
        worker_class,
        *(["--threads", "8"] if worker_class == "gthread" else []),
        "--bind",
        f"127.0.0.1:{port}",
        "--graceful-timeout",
        "5",
        "--timeout",
        "60",
        app,
    )


@pytest.mark.parametrize("store", ["memory", "redis"])
@pytest.mark.parametrize("worker_class", ["sync", "gthread"])
def test_gunicorn_preload_four_workers(worker_class: str, store: str) -> None:
    with sandbox_server() as server, redis_server(store == "redis") as redis:
        port = free_port()
        command = gunicorn(port, worker_class, "tests.frameworks.apps.wsgi_app:app")
        served = serve_burst(command, environ(server, redis), port, ["/charges"])
        stats = server.sandbox.stats()
    name = f"gunicorn --preload -w 4 -k {worker_class}"
    check_burst(name, served.answers, stats, store=store, most_workers=WORKERS, log=served.log)
    check_stopped_cleanly(served)


@pytest.mark.parametrize("store", ["memory", "redis"])
def test_gunicorn_preload_workers_inherit_a_token_taken_by_the_master(store: str) -> None:
    # The master's manager (and, with Redis, its store client) has been used when the
    # workers fork: each worker keeps the token and opens connections of its own.
    with sandbox_server() as server, redis_server(store == "redis") as redis:
        port = free_port()
        command = gunicorn(port, "sync", "tests.frameworks.apps.wsgi_app:app")
        env = environ(server, redis, PAYMENTS_WARM_UP="1")
        served = serve_burst(command, env, port, ["/charges"])
        stats = server.sandbox.stats()
    name = "gunicorn --preload -w 4, token taken by the master"
    tally = check_burst(
        name, served.answers, stats, store=store, most_workers=WORKERS, log=served.log
    )
    assert stats["token_requests"] == 1
    assert tally.workers > 1
    check_stopped_cleanly(served)
