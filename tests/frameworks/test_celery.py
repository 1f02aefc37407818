"""A Celery prefork worker (concurrency 4, a Redis broker the test starts) running charge
tasks, with the manager made per pool process by ``worker_process_init``.

400 charge tasks with distinct amounts: every result echoes its own amount, no task failed,
at most one token request per pool process with the memory store and exactly one with the
Redis store.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
from celery import Celery

from tests.frameworks.support import (
    CHARGES,
    RUN_SECONDS,
    Answer,
    Process,
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
from tests.servers import RedisServer

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


def celery_worker() -> list[str]:
    """The recipe's prefork worker, 4 pool processes."""
    return python(
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


def celery_settings(redis: RedisServer) -> dict[str, str]:
    """Broker and result backend on the test's Redis (databases 1 and 2; the fleet store
    keeps database 0)."""
    return {
        "CELERY_BROKER_URL": redis.url[:-1] + "1",
        "CELERY_RESULT_BACKEND": redis.url[:-1] + "2",
    }


@contextlib.contextmanager
def celery_client(redis: RedisServer) -> Iterator[Celery]:
    """A Celery client of the worker's broker, which sends tasks by name."""
    settings = celery_settings(redis)
    client = Celery(
        "test-client",
        broker=settings["CELERY_BROKER_URL"],
        backend=settings["CELERY_RESULT_BACKEND"],
    )
    try:
        yield client
    finally:
        with contextlib.suppress(Exception):
            client.close()


def celery_ready(client: Celery, process: Process) -> None:
    """Wait until a worker answers a ping."""
    poll(lambda: bool(client.control.ping(timeout=0.2)), process)


@pytest.mark.parametrize("store", ["memory", "redis"])
def test_celery_prefork_worker_concurrency_four(store: str) -> None:
    with sandbox_server() as server, redis_server() as redis:
        assert redis is not None
        env = environ(server, redis if store == "redis" else None, **celery_settings(redis))
        with celery_client(redis) as client, running(celery_worker(), env) as process:
            celery_ready(client, process)
            answers = collect(client, range(1, CHARGES + 1))
            status = process.stop()
            log = process.output()
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
