"""The command line, run as a user runs it: the installed console script, in a subprocess."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Mapping
from typing import IO

import pytest

from eightyeightpay.plugins.sandbox import DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, SandboxServer
from tests.servers import CLI, cli_sandbox


def run(
    *args: str,
    env: Mapping[str, str | None] | None = None,
    timeout: float = 300,
    stdout: int | IO[str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """The console script with ``env`` over this process's environment (None unsets a name).

    Its stderr is captured, and its stdout too unless ``stdout`` (a file or descriptor) takes it.
    """
    merged: dict[str, str | None] = {**os.environ, **(env or {})}
    return subprocess.run(
        [CLI, *args],
        stdout=subprocess.PIPE if stdout is None else stdout,
        stderr=subprocess.PIPE,
        text=True,
        timeout=timeout,
        env={name: value for name, value in merged.items() if value is not None},
        check=False,
    )


def test_demo_shows_one_token_request_per_runtime_with_no_configuration() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EIGHTY_EIGHT_PAY_")}
    result = subprocess.run(
        [CLI, "demo", "--tasks", "2000"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    for runtime, callers in (("threads", "256"), ("asyncio", "2,000"), ("trio", "2,000")):
        row = re.search(
            rf"^\s+{runtime}\s+{callers}\s+(\d+)\s+(\d+)\s+\d+ ns\s+200 txn_", result.stdout, re.M
        )
        assert row, f"no row for {runtime}:\n{result.stdout}"
        assert row.groups() == ("1", "1")
    assert re.search(r"token requests\s+(\d+)", result.stdout.split("simulated hour")[1])
    hour = result.stdout.split("simulated hour")[1]
    assert int(re.search(r"token requests\s+(\d+)", hour).group(1)) <= 74  # type: ignore[union-attr]
    assert re.search(r"expired tokens handed out\s+0", hour)
    assert re.search(r"callers that waited on the network\s+0", hour)


@pytest.fixture
def env_for(https_server: SandboxServer) -> dict[str, str]:
    assert https_server.certificates is not None
    return {
        "EIGHTY_EIGHT_PAY_API_KEY": DEFAULT_API_KEY,
        "EIGHTY_EIGHT_PAY_MERCHANT_ID": DEFAULT_MERCHANT_ID,
        "EIGHTY_EIGHT_PAY_BASE_URL": https_server.url,
        "SSL_CERT_FILE": str(https_server.certificates.ca_file),
    }


def test_token_uses_the_environment_and_the_system_trust_store(env_for: dict[str, str]) -> None:
    result = run("token", "--json", env=env_for)
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["merchant_id"] == DEFAULT_MERCHANT_ID
    assert 0 < record["expires_in"] <= 60
    assert not record["access_token"].startswith("eyJ")
    stats = record["stats"]
    assert stats["token_requests"] == 1 and stats["outcomes"]["ok"] == 1
    assert stats["minute_remaining"] == 9 and stats["store_mode"] == "local"
    assert DEFAULT_API_KEY not in result.stdout


def test_request_prints_status_and_body(env_for: dict[str, str]) -> None:
    result = run("request", "POST", f"/api/balance?id={DEFAULT_MERCHANT_ID}", "--json", env=env_for)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["status"] == 200


def test_errors_exit_1_with_the_typed_message(env_for: dict[str, str]) -> None:
    result = run(
        "token",
        env={
            **env_for,
            "EIGHTY_EIGHT_PAY_API_KEY": "sk_live_abcdefgh1234",
            "EIGHTY_EIGHT_PAY_BASE_URL": "https://api-sandbox.88pay.io",
        },
    )
    assert result.returncode == 1
    assert "EnvironmentMismatch" in result.stderr and "sk_live_abcdefgh1234" not in result.stderr


def test_bad_usage_exits_2() -> None:
    assert run("request", "POST").returncode == 2
    assert run("nonsense").returncode == 2


def test_sandbox_command_serves_and_prints_how_to_use_it() -> None:
    with cli_sandbox("--tls") as info:
        assert info["url"].startswith("https://127.0.0.1:")
        assert info["api_key"] == DEFAULT_API_KEY and os.path.exists(info["ca_file"])
        env = {
            "EIGHTY_EIGHT_PAY_API_KEY": info["api_key"],
            "EIGHTY_EIGHT_PAY_MERCHANT_ID": info["merchant_id"],
            "EIGHTY_EIGHT_PAY_BASE_URL": info["url"],
            "SSL_CERT_FILE": info["ca_file"],
        }
        assert run("token", env=env).returncode == 0
    assert not os.path.exists(info["ca_file"])  # the throw-away CA is removed on exit


def test_request_shows_the_error_answer_without_json(env_for: dict[str, str]) -> None:
    charge = '{"flow":"PAYIN","method_code":"PSE","amount":0,"currency":"COP","country":"COL"}'
    result = run("request", "POST", "/api/transactions/charges", "--data", charge, env=env_for)
    assert result.returncode == 1
    status, _, body = result.stdout.partition("\n")
    assert status == "HTTP 422"
    assert json.loads(body)["status"] == "Error"  # the envelope, shown all the same
    assert "the answer is on stdout" in result.stderr


def test_version() -> None:
    result = run("--version")
    assert result.returncode == 0 and result.stdout.startswith("eightyeightpay ")
