"""What a new user met trying the command line from docs/cli.md alone, each run as they ran it.

Every test runs the installed ``eightyeightpay`` console script in a subprocess, bounded in
time, and checks that no secret reaches its output.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import IO, Any

import pytest

from eightyeightpay.plugins.sandbox import (
    DEFAULT_API_KEY,
    DEFAULT_MERCHANT_ID,
    RateLimit,
    Sandbox,
    SandboxServer,
)
from tests.e2e.test_cli import run
from tests.servers import CLI, RedisServer, with_ctrl_c

EXIT_INTERRUPTED = 130
EXIT_CLOSED_PIPE = 141
"""As docs/cli.md's exit-code table says (tests/e2e/test_cli_mistakes.py keeps it and the code equal)."""


@pytest.fixture(scope="module")
def http_env() -> Iterator[dict[str, str]]:
    """The variables of a plain-HTTP loopback emulator (commands take --allow-http-loopback)."""
    with SandboxServer() as server:
        yield {
            **os.environ,
            "EIGHTY_EIGHT_PAY_API_KEY": DEFAULT_API_KEY,
            "EIGHTY_EIGHT_PAY_MERCHANT_ID": DEFAULT_MERCHANT_ID,
            "EIGHTY_EIGHT_PAY_BASE_URL": server.url,
        }


def _no_secret(text: str) -> None:
    assert DEFAULT_API_KEY not in text and "eyJ" not in text


def _read_line(stream: int, pending: bytearray, deadline: float) -> str | None:
    """The next line from the pipe ``stream`` by ``deadline`` (monotonic), or None at its end."""
    while b"\n" not in pending:
        left = deadline - time.monotonic()
        assert left > 0, f"no line within the time allowed; so far: {bytes(pending)!r}"
        ready, _, _ = select.select([stream], [], [], left)
        if ready:
            chunk = os.read(stream, 4096)
            if not chunk:
                return None
            pending += chunk
    line, _, rest = bytes(pending).partition(b"\n")
    pending[:] = rest
    return line.decode()


def _lines_until(
    stream: IO[bytes] | None, last: Callable[[str], object], seconds: float
) -> list[str]:
    """The lines of ``stream`` up to the first for which ``last(line)`` is true, within ``seconds``."""
    assert stream is not None
    pending = bytearray()
    lines: list[str] = []
    deadline = time.monotonic() + seconds
    while not lines or not last(lines[-1]):
        line = _read_line(stream.fileno(), pending, deadline)
        assert line is not None, lines[-5:]
        lines.append(line)
    return lines


@contextlib.contextmanager
def _started(args: list[str], **options: Any) -> Iterator[subprocess.Popen[bytes]]:
    """The console script started with Ctrl-C reaching it, killed on leaving if still running."""
    with subprocess.Popen(with_ctrl_c([CLI, *args]), **options) as process:
        try:
            yield process
        finally:
            if process.poll() is None:
                process.kill()


# --------------------------------------------------------------------------- doctor --full


def test_doctor_prints_each_row_as_it_ends_and_ctrl_c_keeps_them(
    http_env: dict[str, str],
) -> None:
    # --full waits ~50 s for the renewal; the rows before it must show at once, not then.
    # No PYTHONUNBUFFERED: stdout is a pipe, block-buffered unless the command flushes.
    env = {name: value for name, value in http_env.items() if name != "PYTHONUNBUFFERED"}
    with _started(
        ["doctor", "--full", "--allow-http-loopback"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    ) as process:
        # The last row before the renewal's; Ctrl-C after it can only cut the renewal short.
        rows = _lines_until(process.stdout, lambda row: "store reachable" in row, 30)
        assert process.poll() is None  # still waiting for the renewal
        process.send_signal(signal.SIGINT)
        rest, stderr = process.communicate(timeout=30)
    assert process.returncode == EXIT_INTERRUPTED, stderr
    assert stderr == b"", stderr
    assert rest == b""  # the renewal never got its row
    shown = [row.split(maxsplit=1) for row in rows]
    assert [mark for mark, _ in shown] == ["ok"] * 10
    assert shown[0][1].startswith("variables loaded") and "token renewed" not in "".join(rows)
    _no_secret("\n".join(rows))


# --------------------------------------------------------------------------- closed pipe


def _into_closed_pipe(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run the command with its stdout a pipe whose reader has gone (as `| head -1` leaves it)."""
    reader, writer = os.pipe()
    os.close(reader)
    try:
        return run(*args, env=env, timeout=120, stdout=writer)
    finally:
        os.close(writer)


@pytest.mark.parametrize(
    "args",
    [
        ("demo", "--threads", "4", "--tasks", "50"),
        ("doctor", "--allow-http-loopback"),
        ("doctor", "--json", "--allow-http-loopback"),
        ("token", "--allow-http-loopback"),
    ],
    ids=["demo", "doctor", "doctor-json", "token"],
)
def test_a_closed_pipe_ends_the_command_quietly(
    args: tuple[str, ...], http_env: dict[str, str]
) -> None:
    result = _into_closed_pipe(*args, env=http_env)
    assert result.returncode == EXIT_CLOSED_PIPE, result.stderr
    assert result.stderr == ""  # no "error: ...", no "Exception ignored", no traceback


def test_head_takes_the_first_line_and_the_pipeline_ends_quietly(
    http_env: dict[str, str],
) -> None:
    shell = subprocess.run(
        ["bash", "-c", f'"{CLI}" demo --threads 4 --tasks 50 | head -1; echo "${{PIPESTATUS[0]}}"'],
        capture_output=True,
        text=True,
        timeout=120,
        env=http_env,
        check=False,
    )
    first, status = shell.stdout.splitlines()
    assert first.startswith("eightyeightpay demo:")
    assert status in ("0", "141")  # 0 when the demo finished before head closed the pipe
    assert shell.stderr == ""


# --------------------------------------------------------------------------- token


def test_token_names_its_two_times_and_they_agree_with_its_stats(
    http_env: dict[str, str],
) -> None:
    result = run("token", "--allow-http-loopback", env=http_env, timeout=60)
    assert result.returncode == 0, result.stderr
    rows = dict(line.split(maxsplit=1) for line in result.stdout.splitlines())
    expires = re.fullmatch(r"(\d+) s: when 88Pay's token expires", rows["expires_in"])
    usable = re.fullmatch(
        r"(\d+) s: handed out until (\d+) s before it expires, then renewed .*",
        rows["usable_for"],
    )
    assert expires and usable, result.stdout
    left = re.search(r"token (\d+) s left", rows["stats"])
    assert left, rows["stats"]
    assert usable.group(1) == left.group(1)  # one "left" number: the stats line's is usable_for
    assert int(expires.group(1)) - int(usable.group(1)) == int(usable.group(2))
    assert int(usable.group(1)) < int(expires.group(1)) <= 60
    _no_secret(result.stdout + result.stderr)

    record = json.loads(run("token", "--json", "--allow-http-loopback", env=http_env).stdout)
    assert 0 < record["usable_for"] < record["expires_in"] <= 60
    assert abs(record["usable_for"] - record["stats"]["token_remaining"]) < 1


# --------------------------------------------------------------------------- arguments


def test_verbose_is_accepted_after_the_command_too(http_env: dict[str, str]) -> None:
    for argv in (("token", "-v"), ("-v", "token"), ("token", "--verbose")):
        result = run(*argv, "--allow-http-loopback", env=http_env, timeout=60)
        assert result.returncode == 0, (argv, result.stderr)
        assert re.search(r"^DEBUG eightyeightpay", result.stderr, re.M), (argv, result.stderr)
        _no_secret(result.stdout + result.stderr)
    quiet = run("token", "--allow-http-loopback", env=http_env, timeout=60)
    assert "DEBUG" not in quiet.stderr


@pytest.mark.parametrize("command", ["token", "request", "doctor", "sandbox", "demo"])
def test_an_unknown_flag_shows_the_commands_own_usage(command: str) -> None:
    extra = ("POST", "/api/balance") if command == "request" else ()
    result = run(command, *extra, "--bogus", timeout=60)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert lines[0].startswith(f"usage: eightyeightpay {command} "), result.stderr
    assert lines[-1] == (
        f"error: unrecognized arguments: --bogus (see `eightyeightpay {command} --help`)"
    )


# --------------------------------------------------------------------------- Ctrl-C at start


CTRL_C_MOMENTS = [
    *((module, 0.0) for module in ("attr", "eightyeightpay.errors", "argparse")),
    *(("eightyeightpay.adapters.cli", after) for after in (0.0, 0.01, 0.03, 0.1)),
]
"""When Ctrl-C is sent: as Python reports (PYTHONPROFILEIMPORTTIME) that the import of a module
ended, then ``after`` seconds more. attrs and the errors load on the way to the command line's
module (in the package root until it loaded its names lazily; cattrs loads only when a first
answer is decoded, which a command waiting on a silent server never reaches); argparse is the
first import after that module's SIGINT handler; once the module has loaded, main() is
starting."""


@contextlib.contextmanager
def _silent_server() -> Iterator[str]:
    """The URL of a loopback server that takes connections and never answers."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


@pytest.mark.parametrize("command", ["token", "demo", "sandbox"])
def test_ctrl_c_while_the_command_starts_exits_130_without_a_traceback(command: str) -> None:
    # Each command stays running through every moment: the sandbox serves until stopped, the
    # demo runs for seconds, and the token command waits on a server that never answers.
    with _silent_server() as url:
        env = {
            **os.environ,
            "PYTHONPROFILEIMPORTTIME": "1",
            "EIGHTY_EIGHT_PAY_API_KEY": DEFAULT_API_KEY,
            "EIGHTY_EIGHT_PAY_MERCHANT_ID": DEFAULT_MERCHANT_ID,
            "EIGHTY_EIGHT_PAY_BASE_URL": url,
        }
        args = {
            "token": ["token", "--allow-http-loopback"],
            "demo": ["demo"],
            "sandbox": ["sandbox", "--port", "0"],
        }[command]
        for module, after in CTRL_C_MOMENTS:
            with _started(
                args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env
            ) as process:
                ended = re.compile(rf"\|\s+{re.escape(module)}$")
                _lines_until(process.stderr, ended.search, 60)
                time.sleep(after)
                process.send_signal(signal.SIGINT)
                _, stderr = process.communicate(timeout=30)
            said = stderr.decode()
            moment = f"Ctrl-C {after} s after {module} loaded"
            assert process.returncode == EXIT_INTERRUPTED, (moment, said[-2000:])
            assert "Traceback" not in said and "KeyboardInterrupt" not in said, (
                moment,
                said[-2000:],
            )


# --------------------------------------------------------------------------- the token budget


def test_a_429_tells_a_command_line_user_what_they_can_do() -> None:
    # 88Pay's budget at 2 a minute: the third command's token request draws a 429.
    with SandboxServer(Sandbox(token_limits=(RateLimit(2, 60.0),))) as server:
        env = {
            **os.environ,
            "EIGHTY_EIGHT_PAY_API_KEY": DEFAULT_API_KEY,
            "EIGHTY_EIGHT_PAY_MERCHANT_ID": DEFAULT_MERCHANT_ID,
            "EIGHTY_EIGHT_PAY_BASE_URL": server.url,
        }
        codes = [run("token", "--allow-http-loopback", env=env, timeout=60) for _ in range(2)]
        assert [result.returncode for result in codes] == [0, 0]
        refused = run("token", "--allow-http-loopback", env=env, timeout=60)
        doctor = run("doctor", "--allow-http-loopback", env=env, timeout=60)
        assert server.sandbox.stats()["token_requests"] == 4
    assert refused.returncode == 1, refused.stderr
    line = refused.stderr.splitlines()[-1]
    assert line.startswith("error: RateLimited: 88Pay rate-limited the token request (429"), line
    assert "each token, request and doctor command is a new process" in line
    assert "set EIGHTY_EIGHT_PAY_STORE=redis and EIGHTY_EIGHT_PAY_REDIS_URL" in line
    assert "One token per command" in line and "fleet store" not in line
    assert doctor.returncode == 1
    assert re.search(r"^  FAIL token obtained +RateLimited: ", doctor.stdout, re.M)
    assert "Without EIGHTY_EIGHT_PAY_STORE each token, request and doctor" in doctor.stdout
    _no_secret(refused.stdout + refused.stderr + doctor.stdout + doctor.stderr)


def test_commands_share_one_token_through_the_store_the_environment_names(
    http_env: dict[str, str], redis_server: RedisServer
) -> None:
    # Own emulator: its token counter starts at zero.
    with SandboxServer() as server:
        env = {
            **http_env,
            "EIGHTY_EIGHT_PAY_BASE_URL": server.url,
            "EIGHTY_EIGHT_PAY_STORE": "redis",
            "EIGHTY_EIGHT_PAY_REDIS_URL": redis_server.url,
        }
        balance = f"/api/balance?id={DEFAULT_MERCHANT_ID}"
        results = [
            run(*argv, "--allow-http-loopback", env=env, timeout=60)
            for argv in (("token",), ("token", "--json"), ("request", "POST", balance), ("doctor",))
        ]
        assert server.sandbox.stats()["token_requests"] == 1  # four commands, one token
    for result in results:
        assert result.returncode == 0, result.stderr
        _no_secret(result.stdout + result.stderr)
    first, second = results[0].stdout, json.loads(results[1].stdout)
    assert re.search(r"stats +1 token request .*store healthy", first), first
    assert second["stats"]["token_requests"] == 0 and second["fingerprint"] in first
    assert re.search(
        r"^  ok   token obtained +token \w+, expires in \d+ s; from the redis store, not requested",
        results[3].stdout,
        re.M,
    ), results[3].stdout
