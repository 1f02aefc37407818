"""gunicorn --preload, 4 workers (sync and gthread), a manager made at import time.

400 concurrent charges with distinct amounts over HTTP: every answer echoes its own amount,
no errors, at most one token request per worker with the memory store and exactly one with
the Redis store.
"""

from __future__ import annotations

import pytest

from tests.frameworks.support import (
    CHARGES,
    Tally,
    charge_concurrently,
    environ,
    first_errors,
    python,
    redis_server,
    report,
    running,
    sandbox_server,
    serving,
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
        env = environ(server, redis)
        port = free_port()
        command = gunicorn(port, worker_class, "tests.frameworks.apps.wsgi_app:app")
        with running(command, env) as process:
            serving(process, f"http://127.0.0.1:{port}/healthz")
            answers = charge_concurrently(f"http://127.0.0.1:{port}/charges", range(1, CHARGES + 1))
        stats = server.sandbox.stats()
    tally = Tally.of(answers)
    report(
        f"gunicorn --preload -w 4 -k {worker_class}, {store} store", tally, stats["token_requests"]
    )
    assert tally.errors == 0, first_errors(answers)
    assert tally.answers == tally.echoed == CHARGES
    assert stats["charges"] == CHARGES
    assert 1 <= tally.workers <= WORKERS
    if store == "memory":
        assert 1 <= stats["token_requests"] <= tally.workers
    else:
        assert stats["token_requests"] == 1
