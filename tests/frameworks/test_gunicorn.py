"""gunicorn --preload, 4 workers (sync and gthread), a manager made at import time.

400 concurrent charges with distinct amounts over HTTP: every answer echoes its own amount,
no errors, at most one token request per worker with the memory store and exactly one with
the Redis store.
"""

from __future__ import annotations

import pytest

from tests.frameworks.support import check_server_burst, python

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
    check_server_burst(
        f"gunicorn --preload -w 4 -k {worker_class}",
        lambda port: gunicorn(port, worker_class, "tests.frameworks.apps.wsgi_app:app"),
        ["/charges"],
        store=store,
        most_workers=WORKERS,
    )


@pytest.mark.parametrize("store", ["memory", "redis"])
def test_gunicorn_preload_workers_inherit_a_token_taken_by_the_master(store: str) -> None:
    # The master's manager (and, with Redis, its store client) has been used when the
    # workers fork: each worker keeps the token and opens connections of its own.
    _, tally, stats = check_server_burst(
        "gunicorn --preload -w 4, token taken by the master",
        lambda port: gunicorn(port, "sync", "tests.frameworks.apps.wsgi_app:app"),
        ["/charges"],
        store=store,
        most_workers=WORKERS,
        PAYMENTS_WARM_UP="1",
    )
    assert stats["token_requests"] == 1
    assert tally.workers > 1
