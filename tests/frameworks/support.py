"""What the framework tests share: the HTTPS emulator, bounded server processes, a burst of
concurrent charges, and the counts they report.

Every server or worker runs as a real child process with a bounded life: it is polled (never
slept on) until it answers, and it is always stopped (SIGTERM, then SIGKILL) in a ``finally``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import httpx

from eightyeightpay.plugins.sandbox import (
    DEFAULT_API_KEY,
    DEFAULT_MERCHANT_ID,
    RateLimit,
    Sandbox,
    SandboxServer,
)
from tests.servers import RedisServer, free_port

ROOT = Path(__file__).resolve().parents[2]
"""The repository: child processes run there, so ``tests.frameworks.apps`` imports."""

CHARGES = 400
"""Concurrent charges per run, each with its own amount (1 to 400)."""

# 88Pay allows 60 API calls a minute (1,000 an hour). A burst of 400 charges in a few seconds
# would be refused by it, so the emulator's API budget is raised for these runs, and the
# apps' API governor is raised to match through EIGHTY_EIGHT_PAY_API_PER_MINUTE/_PER_HOUR
# (as for a merchant whose limits 88Pay raised); the token limits (10 a minute, 100 an
# hour), which these tests are about, stay 88Pay's own on both sides.
BURST_API_LIMITS = (RateLimit(100_000, 60.0),)
BURST_API_ENVIRON = {
    "EIGHTY_EIGHT_PAY_API_PER_MINUTE": "100000",
    "EIGHTY_EIGHT_PAY_API_PER_HOUR": "6000000",
}

STARTUP_SECONDS = 60.0
"""Longest a server or worker may take to answer after it is started (polled)."""
RUN_SECONDS = 120.0
"""Longest a burst of charges may take."""


@contextlib.contextmanager
def sandbox_server() -> Iterator[SandboxServer]:
    """The emulator over HTTPS on loopback, with 88Pay's token limits and a raised API budget."""
    with SandboxServer(Sandbox(api_limits=BURST_API_LIMITS), tls=True) as server:
        yield server


@contextlib.contextmanager
def redis_server(wanted: bool = True) -> Iterator[RedisServer | None]:
    """A redis-server of the test's own on a free port (None unless ``wanted``)."""
    if not wanted:
        yield None
        return
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.close()


def environ(
    server: SandboxServer, redis: RedisServer | None = None, **extra: str
) -> dict[str, str]:
    """The environment a deployed app would have: credentials, base URL and trusted CA.

    With ``redis`` the apps share their token through it (``EIGHTY_EIGHT_PAY_REDIS_URL``).
    """
    assert server.certificates is not None
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("EIGHTY_EIGHT_PAY_") and not name.startswith("PYTEST")
    }
    env.update(
        EIGHTY_EIGHT_PAY_API_KEY=DEFAULT_API_KEY,
        EIGHTY_EIGHT_PAY_MERCHANT_ID=DEFAULT_MERCHANT_ID,
        EIGHTY_EIGHT_PAY_BASE_URL=server.url,
        SSL_CERT_FILE=str(server.certificates.ca_file),
        PYTHONPATH=str(ROOT),
        PYTHONUNBUFFERED="1",
        **BURST_API_ENVIRON,
    )
    if redis is not None:
        env["EIGHTY_EIGHT_PAY_REDIS_URL"] = redis.url
    env.update(extra)
    return env


class Process:
    """A child process whose output goes to a temporary file (shown when a test fails)."""

    def __init__(self, command: Sequence[str], env: dict[str, str]) -> None:
        self.command = " ".join(command)
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed in stop()
            prefix="eightyeightpay-framework-", suffix=".log"
        )
        self.popen = subprocess.Popen(
            list(command),
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its workers are stopped with it, as a group
        )
        self.status: int | None = None
        self.final_output = ""

    def output(self) -> str:
        """The end of what the process printed (kept after it is stopped)."""
        if self.status is not None:
            return self.final_output
        return Path(self.log.name).read_text(errors="replace")[-6000:]

    def check_alive(self) -> None:
        if self.popen.poll() is not None:
            raise AssertionError(
                f"{self.command} exited with {self.popen.returncode}:\n{self.output()}"
            )

    def stop(self, grace: float = 15.0) -> int:
        """SIGTERM to the group, then SIGKILL after ``grace`` seconds; returns the exit status.

        Idempotent: a second call returns the first one's status.
        """
        if self.status is not None:
            return self.status
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            status = self.popen.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            status = self.popen.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)  # any worker left behind
        self.final_output = self.output()
        self.status = status
        self.log.close()
        return status


@contextlib.contextmanager
def running(command: Sequence[str], env: dict[str, str]) -> Iterator[Process]:
    """Run ``command``; always stopped on leaving."""
    process = Process(command, env)
    try:
        yield process
    finally:
        process.stop()


def poll(ready: Callable[[], bool], process: Process, seconds: float = STARTUP_SECONDS) -> None:
    """Call ``ready`` every 50 ms until it is true; fail if the process dies or time runs out."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        process.check_alive()
        with contextlib.suppress(Exception):
            if ready():
                return
        time.sleep(0.05)
    raise AssertionError(f"not ready after {seconds} s:\n{process.output()}")


def serving(process: Process, url: str) -> None:
    """Wait until ``url`` answers 200."""
    poll(lambda: httpx.get(url, timeout=1.0).status_code == 200, process)


def python(*arguments: str) -> list[str]:
    """A command line run by this interpreter (the tests' virtual environment)."""
    return [sys.executable, *arguments]


@attrs.frozen
class Answer:
    """One charge's answer, as the app returned it."""

    amount: int
    status: int
    body: Any


async def _burst(urls: Sequence[str], amounts: Sequence[int]) -> list[Answer]:
    limits = httpx.Limits(max_connections=len(amounts), max_keepalive_connections=0)
    async with httpx.AsyncClient(limits=limits, timeout=RUN_SECONDS) as client:

        async def one(amount: int) -> Answer:
            try:
                url = urls[amount % len(urls)]
                response = await client.post(url, json={"amount": amount})
            except httpx.HTTPError as error:
                return Answer(amount, 0, repr(error))
            try:
                body = response.json()
            except ValueError:
                body = response.text
            return Answer(amount, response.status_code, body)

        return list(await asyncio.gather(*(one(amount) for amount in amounts)))


def charge_concurrently(urls: str | Sequence[str], amounts: Sequence[int]) -> list[Answer]:
    """POST ``{"amount": n}`` for every amount at once; every answer, in order.

    Amount ``n`` goes to ``urls[n % len(urls)]`` (a single URL takes them all).
    """
    chosen = [urls] if isinstance(urls, str) else list(urls)
    return asyncio.run(asyncio.wait_for(_burst(chosen, amounts), RUN_SECONDS))


@attrs.frozen
class Tally:
    """What a burst came to: answers that echo their own amount, errors, worker processes."""

    answers: int
    echoed: int
    errors: int
    workers: int

    @classmethod
    def of(cls, answers: Sequence[Answer]) -> Tally:
        echoed = sum(
            1
            for answer in answers
            if answer.status == 200 and answer.body["charge"]["amount"] == answer.amount
        )
        errors = sum(1 for answer in answers if answer.status != 200)
        workers = len({answer.body["pid"] for answer in answers if answer.status == 200})
        return cls(len(answers), echoed, errors, workers)


def first_errors(answers: Sequence[Answer], count: int = 3) -> list[Answer]:
    """A few failed answers, for an assertion message."""
    return [answer for answer in answers if answer.status != 200][:count]


def report(name: str, tally: Tally, token_requests: int) -> None:
    """Print the counts of a run (``pytest -s`` shows them; docs/frameworks.md quotes them)."""
    print(
        f"\n{name}: {tally.answers} answers, {tally.echoed} echoing their own amount, "
        f"{tally.errors} errors, {tally.workers} worker processes, "
        f"{token_requests} token requests"
    )


@attrs.frozen
class Served:
    """A server's run: the burst's answers, then its exit status and output once stopped."""

    answers: list[Answer]
    status: int
    log: str


def serve_burst(
    command: Sequence[str], env: dict[str, str], port: int, paths: Sequence[str]
) -> Served:
    """Start a server on ``port``, wait for ``/healthz``, charge 1..400 across ``paths``, stop it."""
    base = f"http://127.0.0.1:{port}"
    with running(command, env) as process:
        serving(process, base + "/healthz")
        answers = charge_concurrently([base + path for path in paths], range(1, CHARGES + 1))
        status = process.stop()
        return Served(answers, status, process.output())


def check_burst(
    name: str,
    answers: Sequence[Answer],
    stats: dict[str, int],
    *,
    store: str,
    most_workers: int,
    log: str = "",
) -> Tally:
    """Every charge answered with its own amount, no error, and the token requests a store allows:
    at most one per worker process with ``memory``, exactly one with ``redis``."""
    tally = Tally.of(answers)
    report(f"{name}, {store} store", tally, stats["token_requests"])
    assert tally.errors == 0, (first_errors(answers), log)
    assert tally.answers == tally.echoed == CHARGES
    assert stats["charges"] == CHARGES
    assert 1 <= tally.workers <= most_workers
    if store == "memory":
        assert 1 <= stats["token_requests"] <= tally.workers
    else:
        assert stats["token_requests"] == 1
    return tally


def check_stopped_cleanly(served: Served) -> None:
    """The server exited with status 0 on SIGTERM, and logged no traceback."""
    assert served.status == 0, served.log
    assert "Traceback" not in served.log, served.log


def check_server_burst(
    name: str,
    command: Callable[[int], Sequence[str]],
    paths: Sequence[str],
    *,
    store: str,
    most_workers: int,
    **extra: str,
) -> tuple[Served, Tally, dict[str, int]]:
    """The server ``command(port)`` on a free port, against the emulator (and a Redis of its
    own with ``store="redis"``; ``extra`` variables added to :func:`environ`'s): a burst
    through ``paths``, checked by :func:`check_burst` and :func:`check_stopped_cleanly`.
    Returns the run, its tally and the emulator's counts."""
    with sandbox_server() as server, redis_server(store == "redis") as redis:
        port = free_port()
        served = serve_burst(command(port), environ(server, redis, **extra), port, paths)
        stats = server.sandbox.stats()
    tally = check_burst(
        name, served.answers, stats, store=store, most_workers=most_workers, log=served.log
    )
    check_stopped_cleanly(served)
    return served, tally, stats


def run_to_end(command: Sequence[str], env: dict[str, str]) -> tuple[int, str]:
    """Run ``command`` until it exits (at most :data:`RUN_SECONDS`); its status and output."""
    process = Process(command, env)
    try:
        process.popen.wait(timeout=RUN_SECONDS)
    finally:
        status = process.stop()
    return status, process.output()
