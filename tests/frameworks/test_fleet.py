"""One Redis, one token: gunicorn, uvicorn and a Celery worker, each standing for a host of
its own, serve charges at the same time and make a single token request between them."""

from __future__ import annotations

import contextlib
from concurrent.futures import ThreadPoolExecutor

from tests.frameworks.support import (
    CHARGES,
    Served,
    charge_concurrently,
    check_burst,
    check_stopped_cleanly,
    environ,
    redis_server,
    running,
    sandbox_server,
    serving,
)
from tests.frameworks.test_celery import (
    CONCURRENCY,
    celery_client,
    celery_ready,
    celery_settings,
    celery_worker,
    collect,
)
from tests.frameworks.test_gunicorn import WORKERS, gunicorn
from tests.frameworks.test_uvicorn import WORKERS as UVICORN_WORKERS
from tests.frameworks.test_uvicorn import uvicorn
from tests.servers import free_port

TASKS = 100
"""Of the 400 charges, those sent as Celery tasks; the rest go over HTTP."""


def test_gunicorn_uvicorn_and_celery_share_one_token_through_redis() -> None:
    with sandbox_server() as server, redis_server() as redis:
        assert redis is not None
        env = environ(server, redis, **celery_settings(redis))
        wsgi, asgi = free_port(), free_port()
        with contextlib.ExitStack() as stack:
            client = stack.enter_context(celery_client(redis))
            servers = [
                stack.enter_context(running(command, env))
                for command in (
                    gunicorn(wsgi, "gthread", "tests.frameworks.apps.wsgi_app:app"),
                    uvicorn(asgi, "tests.frameworks.apps.asgi_app:app"),
                    celery_worker(),
                )
            ]
            serving(servers[0], f"http://127.0.0.1:{wsgi}/healthz")
            serving(servers[1], f"http://127.0.0.1:{asgi}/healthz")
            celery_ready(client, servers[2])
            urls = [
                f"http://127.0.0.1:{wsgi}/charges",
                f"http://127.0.0.1:{asgi}/charges",
                f"http://127.0.0.1:{asgi}/charges/httpx",
            ]
            with ThreadPoolExecutor(1) as pool:
                tasks = pool.submit(collect, client, range(CHARGES - TASKS + 1, CHARGES + 1))
                answers = charge_concurrently(urls, range(1, CHARGES - TASKS + 1))
                answers += tasks.result()
            stopped = [(process.stop(), process.output()) for process in servers]
        stats = server.sandbox.stats()
    log = "\n".join(output for _, output in stopped)
    tally = check_burst(
        "gunicorn, uvicorn and Celery on one Redis",
        answers,
        stats,
        store="redis",
        most_workers=WORKERS + UVICORN_WORKERS + CONCURRENCY,
        log=log,
    )
    assert stats["token_requests"] == 1
    assert tally.workers >= 3  # every server took part
    for status, output in stopped:
        check_stopped_cleanly(Served(answers, status, output))
