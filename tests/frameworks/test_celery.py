"""A Celery prefork worker (concurrency 4, a Redis broker the test starts) running charge
tasks, with the manager made per pool process by ``worker_process_init``.

400 charge tasks with distinct amounts: every result echoes its own amount, no task failed,
at most one token request per pool process with the memory store and exactly one with the
Redis store.
"""

from __future__ import annotations

import contextlib

import pytest
from celery import Celery

from tests.frameworks.support import (
    CHARGES,
    RUN_SECONDS,
    Answer,
    Served,
    check_burst,
    check_stopped_cleanly,
    environ,
    poll,
    python,
    redis_server,
    running,
    sandbox_server,
)

CONCURRENCY = 4


def collect(client: Celery, amounts: range) -> list[Answer]:
    """Send a charge task per amount at once, then wait for every result."""
    sent = [(amount, client.send_task("payments.charge", args=[amount])) for amount in amounts]
    answers = []
    for amount, result in sent:
        try:
            body = result.get(timeout=RUN_SECONDS)
        except Exception as error:
            answers.append(Answer(amount, 0, repr(error)))
        else:
            answers.append(Answer(amount, 200, body))
    return answers


@pytest.mark.parametrize("store", ["memory", "redis"])
def test_celery_prefork_worker_concurrency_four(store: str) -> None:
    with sandbox_server() as server, redis_server() as redis:
        assert redis is not None
        broker, backend = redis.url[:-1] + "1", redis.url[:-1] + "2"
        env = environ(
            server,
            redis if store == "redis" else None,
            CELERY_BROKER_URL=broker,
            CELERY_RESULT_BACKEND=backend,
        )
        command = python(
            "-m",
            "celery",
            "-A",
            "tests.frameworks.apps.celery_app",
            "worker",
            "--pool",
            "prefork",
            "--concurrency",
            str(CONCURRENCY),
            "--loglevel",
            "INFO",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        )
        client = Celery("test-client", broker=broker, backend=backend)
        try:
            with running(command, env) as process:
                poll(lambda: bool(client.control.ping(timeout=0.2)), process)
                answers = collect(client, range(1, CHARGES + 1))
                status = process.stop()
                log = process.output()
        finally:
            with contextlib.suppress(Exception):
                client.close()
        stats = server.sandbox.stats()
    check_burst(
        "Celery prefork worker, concurrency 4",
        answers,
        stats,
        store=store,
        most_workers=CONCURRENCY,
        log=log,
    )
    check_stopped_cleanly(Served(answers, status, log))
