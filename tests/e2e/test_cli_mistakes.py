"""A user's mistakes on the command line: each ends in one line ``error: ...``, no traceback.

Every row runs the installed ``eightyeightpay`` console script in a subprocess, bounded in
time, against an HTTPS emulator in this process, and checks: the exit code of docs/cli.md,
one ``error:`` line as the last line of stderr holding the key words and naming the flag (or
variable) to fix, no traceback, no secret in stdout or stderr, and how many token requests
the mistake cost the emulator (none, unless 88Pay itself had to say no).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from eightyeightpay.adapters.cli import EXIT_CODES, _deliver_again, cli_message
from eightyeightpay.adapters.config import read_environment
from eightyeightpay.credentials import Credentials
from eightyeightpay.errors import (
    EightyEightPayError,
    InsecureTransport,
    RateLimited,
    TLSError,
)
from eightyeightpay.plugins.sandbox import DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, SandboxServer
from tests.e2e.test_cli import run
from tests.e2e.test_doctor import CHECKLIST
from tests.servers import CLI, cli_sandbox, free_port, with_ctrl_c

REPO = Path(__file__).resolve().parents[2]
KEY = "EIGHTY_EIGHT_PAY_API_KEY"
MERCHANT = "EIGHTY_EIGHT_PAY_MERCHANT_ID"
URL = "EIGHTY_EIGHT_PAY_BASE_URL"
PYTHON_NAMES = re.compile(
    r"\b(allow_http_loopback|ca_bundle|max_wait|retry_after)\b|environment=|as arguments"
)
"""How a message meant for Python callers names its arguments; the CLI must not."""


class Mistake(NamedTuple):
    argv: tuple[str, ...]
    env: dict[str, str | None]
    code: int
    words: tuple[str, ...]
    """Key words of the error line."""
    names: str
    """The flag, argument or variable the error line names as the fix."""
    tokens: int = 0
    """Token requests the mistake costs the emulator."""


CHARGE_OF_ZERO = '{"flow":"PAYIN","method_code":"PSE","amount":0,"currency":"COP","country":"COL"}'

MISTAKES = {
    # --ca-bundle: a file that is not there, not PEM, not a file
    "ca-bundle-missing": Mistake(
        ("token", "--ca-bundle", "/nonexistent.pem"),
        {},
        2,
        ("does not exist", "PEM"),
        "--ca-bundle",
    ),
    "ca-bundle-not-pem": Mistake(
        ("token", "--ca-bundle", str(REPO / "README.md")), {}, 2, ("no PEM CA",), "--ca-bundle"
    ),
    "ca-bundle-directory": Mistake(
        ("request", "POST", "/api/balance", "--ca-bundle", str(REPO)),
        {},
        2,
        ("is a directory",),
        "--ca-bundle",
    ),
    # request: refused before a token request is spent
    "path-without-slash": Mistake(
        ("request", "POST", "api/balance"), {}, 2, ("must start with a single '/'",), "PATH"
    ),
    "path-with-space": Mistake(
        ("request", "POST", "/api/ balance"), {}, 2, ("no whitespace",), "PATH"
    ),
    "method-not-a-word": Mistake(
        ("request", "P0ST", "/api/balance"), {}, 2, ("not an HTTP method",), "METHOD"
    ),
    "data-not-json": Mistake(
        ("request", "POST", "/api/balance", "--data", "{oops"), {}, 2, ("not valid JSON",), "--data"
    ),
    "path-missing": Mistake(("request", "POST"), {}, 2, ("required",), "PATH"),
    "non-2xx-answer": Mistake(
        ("request", "POST", "/api/transactions/charges", "--data", CHARGE_OF_ZERO),
        {},
        1,
        ("88Pay answered HTTP 422",),
        "--data",
        tokens=1,
    ),
    # sandbox: loopback only, a port that is taken or out of range
    "sandbox-host-any": Mistake(
        ("sandbox", "--host", "0.0.0.0", "--port", "0"),
        {},
        2,
        ("not a loopback address",),
        "--host",
    ),
    "sandbox-host-name": Mistake(
        ("sandbox", "--host", "example.com"), {}, 2, ("not a loopback address",), "--host"
    ),
    "sandbox-port-busy": Mistake(
        ("sandbox", "--port", "{busy_port}"), {}, 1, ("already in use", "--port 0"), "--port"
    ),
    "sandbox-port-out-of-range": Mistake(
        ("sandbox", "--port", "70000"), {}, 2, ("from 0 to 65535",), "--port"
    ),
    "sandbox-token-lifetime-zero": Mistake(
        ("sandbox", "--token-lifetime", "0"), {}, 2, ("from 1 to",), "--token-lifetime"
    ),
    "sandbox-token-limit-malformed": Mistake(
        ("sandbox", "--token-limit", "ten/6"), {}, 2, ("LIMIT/SECONDS",), "--token-limit"
    ),
    # demo: numbers checked by argparse
    "demo-threads-negative": Mistake(
        ("demo", "--threads", "-1"), {}, 2, ("from 1 to 1024",), "--threads"
    ),
    "demo-tasks-zero": Mistake(("demo", "--tasks", "0"), {}, 2, ("from 1 to",), "--tasks"),
    "demo-tasks-word": Mistake(("demo", "--tasks", "many"), {}, 2, ("whole number",), "--tasks"),
    # the command line itself
    "unknown-command": Mistake(("nonsense",), {}, 2, ("invalid choice", "token"), "COMMAND"),
    "no-command": Mistake((), {}, 2, ("required",), "COMMAND"),
    "unknown-flag": Mistake(("token", "--bogus"), {}, 2, ("unrecognized",), "--bogus"),
    "flag-of-another-command": Mistake(
        ("sandbox", "--ca-bundle", "x.pem"), {}, 2, ("unrecognized",), "--ca-bundle"
    ),
    # the environment
    "api-key-unset": Mistake(
        ("token",), {KEY: None}, 1, ("MalformedCredentials", "not set", "doctor"), KEY
    ),
    "both-variables-unset": Mistake(
        ("request", "POST", "/api/balance"), {KEY: None, MERCHANT: None}, 1, ("not set",), MERCHANT
    ),
    "merchant-malformed": Mistake(
        ("token",), {MERCHANT: "12345"}, 1, ("MalformedCredentials", "MCH-"), "merchant id"
    ),
    "http-to-loopback-without-flag": Mistake(
        ("token",), {URL: "{http_url}"}, 1, ("InsecureTransport",), "--allow-http-loopback"
    ),
    "http-to-a-remote-host": Mistake(
        ("token", "--allow-http-loopback"),
        {URL: "http://example.com"},
        1,
        ("InsecureTransport", "https://"),
        URL,
    ),
    "base-url-without-scheme": Mistake(
        ("token",), {URL: "api.88pay.io"}, 1, ("InsecureTransport", "https://"), URL
    ),
    "base-url-with-a-bad-port": Mistake(
        ("token",), {URL: "https://127.0.0.1:port"}, 1, ("InsecureTransport", "https://"), URL
    ),
    "live-key-on-the-sandbox": Mistake(
        ("token",),
        {KEY: "sk_live_abcdefgh12345678", URL: "https://api-sandbox.88pay.io"},
        1,
        ("EnvironmentMismatch",),
        "sk_test_",
    ),
    # what 88Pay (the emulator) or the network says
    "untrusted-certificate": Mistake(
        ("token",), {"SSL_CERT_FILE": None}, 1, ("TLSError",), "--ca-bundle"
    ),
    "wrong-api-key": Mistake(
        ("token",),
        {KEY: "sk_test_notthekey12345678"},
        1,
        ("InvalidCredentials", "401"),
        "dashboard",
        tokens=1,
    ),
    "nothing-listening": Mistake(
        ("token",), {URL: "https://127.0.0.1:{closed_port}"}, 1, ("ConnectError",), "base URL"
    ),
}


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[SandboxServer, SandboxServer]]:
    with SandboxServer(tls=True) as https, SandboxServer() as http:
        yield https, http


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def _fill(text: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        text = text.replace("{" + name + "}", value)
    return text


@pytest.mark.parametrize("mistake", MISTAKES.values(), ids=MISTAKES.keys())
def test_a_mistake_ends_in_one_error_line_naming_the_fix(
    mistake: Mistake, servers: tuple[SandboxServer, SandboxServer], busy_port: int
) -> None:
    https, http = servers
    assert https.certificates is not None
    values = {"http_url": http.url, "busy_port": str(busy_port), "closed_port": str(free_port())}
    env: dict[str, str | None] = {
        KEY: DEFAULT_API_KEY,
        MERCHANT: DEFAULT_MERCHANT_ID,
        URL: https.url,
        "SSL_CERT_FILE": str(https.certificates.ca_file),
    }
    env.update({k: None if v is None else _fill(v, values) for k, v in mistake.env.items()})
    before = https.sandbox.stats()["token_requests"]

    result = run(*(_fill(arg, values) for arg in mistake.argv), env=env, timeout=60)

    assert result.returncode == mistake.code, result.stderr
    assert mistake.code in EXIT_CODES
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    assert errors == [lines[-1]], result.stderr  # one error line, and it is the last
    for word in (*mistake.words, mistake.names):
        assert word in errors[0], errors[0]
    assert not PYTHON_NAMES.search(errors[0]), errors[0]
    everything = result.stdout + result.stderr
    assert DEFAULT_API_KEY not in everything and "sk_test_notthekey" not in everything
    assert "abcdefgh12345678" not in everything and "eyJ" not in everything
    assert https.sandbox.stats()["token_requests"] - before == mistake.tokens


def test_every_documented_exit_code_is_the_codes_and_back() -> None:
    docs = (REPO / "docs" / "cli.md").read_text()
    table = docs.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    rows = dict(re.findall(r"^\| (\d+) \| (.+) \|$", table, re.M))
    assert {int(code) for code in rows} == set(EXIT_CODES)
    for code, meaning in EXIT_CODES.items():
        assert rows[str(code)].startswith(meaning), (code, rows[str(code)])


def _raised(make: Callable[[], object]) -> EightyEightPayError:
    try:
        make()
    except EightyEightPayError as error:
        return error
    raise AssertionError("no error raised")


PYTHON_WORDED = {
    "http-loopback": _raised(
        lambda: Credentials(DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, "http://127.0.0.1")
    ),
    "not-a-url": _raised(lambda: Credentials(DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, "ftp://x")),
    "unset": _raised(lambda: read_environment({})),
    "tls": TLSError("api.88pay.io", "certificate verify failed"),
    "local-rate-limit": RateLimited(12.0, local=True),
}
"""Library errors whose messages name Python arguments, as a Python caller meets them."""


@pytest.mark.parametrize("error", PYTHON_WORDED.values(), ids=PYTHON_WORDED.keys())
def test_a_message_for_python_callers_names_the_flags_on_the_command_line(
    error: EightyEightPayError,
) -> None:
    # The library keeps its wording for Python; the command line rewords each such message.
    assert PYTHON_NAMES.search(error.message), "the library's wording changed: update the CLI's"
    said = cli_message(error)
    assert not PYTHON_NAMES.search(said), said
    if isinstance(error, InsecureTransport) and "loopback" in error.message:
        assert "--allow-http-loopback" in said
    if isinstance(error, TLSError):
        assert "--ca-bundle" in said


def test_doctor_with_a_missing_ca_bundle_prints_its_whole_checklist_once(
    servers: tuple[SandboxServer, SandboxServer],
) -> None:
    https, _ = servers
    env = {KEY: DEFAULT_API_KEY, MERCHANT: DEFAULT_MERCHANT_ID, URL: https.url}
    result = run("doctor", "--ca-bundle", "/nonexistent.pem", env=env, timeout=60)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    rows = [line.split(maxsplit=1) for line in result.stdout.splitlines() if line[2:3] != " "]
    assert len(rows) == len(CHECKLIST), result.stdout
    for (_, rest), name in zip(rows, CHECKLIST, strict=True):
        assert rest.startswith(name + "  "), (rest, name)
    status = {name: mark for (mark, rest), name in zip(rows, CHECKLIST, strict=True)}
    assert status["host reachable"] == "ok" and status["TLS valid"] == "FAIL"
    assert status["token obtained"] == "--"
    assert "--ca-bundle /nonexistent.pem does not exist" in result.stdout
    assert "fix: Give --ca-bundle a PEM file" in result.stdout


@pytest.mark.parametrize(
    ("url", "flags", "detail"),
    [
        ("http://example.com", ["--allow-http-loopback"], "plain HTTP to example.com"),
        ("http://127.0.0.1:9", [], "is plain HTTP"),
        ("https://host:port", [], "is not an https:// URL"),
    ],
)
def test_doctor_fails_https_for_plain_http_and_still_prints_every_row(
    url: str, flags: list[str], detail: str
) -> None:
    env = {KEY: DEFAULT_API_KEY, MERCHANT: DEFAULT_MERCHANT_ID, URL: url}
    result = run("doctor", *flags, env=env, timeout=60)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert re.search(rf"^  FAIL HTTPS +.*{re.escape(detail)}", result.stdout, re.M)
    assert "fix: 88Pay requires HTTPS" in result.stdout or URL in result.stdout
    for name in ("host reachable", "TLS valid", "token obtained", "second call cached"):
        assert re.search(rf"^  -- +{name} +not run", result.stdout, re.M), name


def test_an_ascii_only_terminal_gets_the_masked_token_without_a_crash(
    servers: tuple[SandboxServer, SandboxServer],
) -> None:
    https, _ = servers
    assert https.certificates is not None
    env = {
        KEY: DEFAULT_API_KEY,
        MERCHANT: DEFAULT_MERCHANT_ID,
        URL: https.url,
        "PYTHONIOENCODING": "ascii",
        "SSL_CERT_FILE": str(https.certificates.ca_file),
    }
    token = run("token", env=env, timeout=60)
    assert token.returncode == 0, token.stderr
    assert re.search(r"^  access_token +\.\.\.[0-9a-f]+$", token.stdout, re.M), token.stdout
    assert token.stdout.isascii()
    doctor = run("doctor", env={**env, KEY: "sk_test_x"}, timeout=60)  # its fix says sk_test_…
    assert doctor.returncode == 1 and "Traceback" not in doctor.stderr
    assert "sk_test_..." in doctor.stdout and doctor.stdout.isascii()


def test_output_that_cannot_be_written_is_one_error_line(
    servers: tuple[SandboxServer, SandboxServer],
) -> None:
    https, _ = servers
    assert https.certificates is not None
    env = {
        KEY: DEFAULT_API_KEY,
        MERCHANT: DEFAULT_MERCHANT_ID,
        URL: https.url,
        "SSL_CERT_FILE": str(https.certificates.ca_file),
    }
    with open("/dev/full", "w") as full:
        result = run("token", "--json", env=env, timeout=60, stdout=full)
    assert result.returncode == 1, result.stderr
    assert result.stderr.splitlines()[-1].startswith("error: could not write the output")
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr


def test_the_sandbox_exits_130_on_ctrl_c() -> None:
    with cli_sandbox(stop=signal.SIGINT, status=130) as info:
        assert info["url"].startswith("http://127.0.0.1:")


@pytest.mark.parametrize("after", [0.0, 0.3, 0.6])
def test_ctrl_c_in_the_demo_exits_130_without_a_traceback(after: float) -> None:
    # Ctrl-C lands in the threads' crowd, the asyncio one or the trio nursery
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with subprocess.Popen(
        with_ctrl_c([CLI, "demo"]),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    ) as process:
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith("1. Every runtime"):
                break
        time.sleep(after)
        process.send_signal(signal.SIGINT)
        try:
            _, stderr = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    assert process.returncode == 130, stderr
    assert stderr.strip() == "", stderr


def test_a_ctrl_c_lost_in_a_weakref_callback_is_delivered_again(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Ctrl-C that lands in a weakref callback is "ignored" by Python (printed, lost): the
    demo once ran on to exit 0 that way. While a command runs it is delivered again and
    raised where the command can end with 130."""

    class Thing:
        pass

    def callback(_: object) -> None:
        raise KeyboardInterrupt  # as Ctrl-C raises it, inside the callback

    hook = sys.unraisablehook
    sys.unraisablehook = _deliver_again
    try:
        with pytest.raises(KeyboardInterrupt):
            thing = Thing()
            kept = weakref.ref(thing, callback)
            del thing  # the callback runs now; its KeyboardInterrupt cannot propagate
            end = time.monotonic() + 10
            while time.monotonic() < end:  # the Ctrl-C delivered again lands in this loop
                time.sleep(0.01)
        assert kept() is None
    finally:
        sys.unraisablehook = hook
    assert "Exception ignored" not in capsys.readouterr().err


@pytest.mark.parametrize("command", ["token", "request", "doctor", "sandbox", "demo"])
def test_every_command_help_opens_with_what_it_does_and_shows_defaults(command: str) -> None:
    result = run(command, "--help", timeout=60)
    assert result.returncode == 0
    description = result.stdout.split("\n\n")[1]
    assert re.match(r"[A-Z][a-z]+ ", description), description
    if command in ("sandbox", "demo"):
        assert result.stdout.count("(default: ") >= 2, result.stdout
