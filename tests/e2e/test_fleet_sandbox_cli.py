"""``eightyeightpay sandbox`` with its own limits: compressed token limits (as the time-compressed
fleet tests run it) and raised API limits (for load tests of a user's own service)."""

from __future__ import annotations

import json
import subprocess
import urllib.request
from urllib.error import HTTPError

import pytest

from tests.servers import CLI, cli_sandbox


def _token_status(info: dict[str, str]) -> int:
    request = urllib.request.Request(
        info["url"] + "/api/auth/token",
        method="POST",
        headers={"x-api-key": info["api_key"], "x-merchant-id": info["merchant_id"]},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except HTTPError as error:
        return error.code


def test_sandbox_takes_compressed_token_limits() -> None:
    with cli_sandbox("--token-lifetime", "6", "--token-limit", "2/6") as info:
        assert [_token_status(info) for _ in range(3)] == [200, 200, 429]
        with urllib.request.urlopen(info["stats"], timeout=10) as response:
            assert json.load(response)["rate_limited"] == 1


def _balance_status(info: dict[str, str], token: str, session: str) -> int:
    request = urllib.request.Request(
        info["url"] + f"/api/balance?id={info['merchant_id']}",
        method="POST",
        headers={"Authorization": f"Bearer {token}", "x-session-id": session},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except HTTPError as error:
        return error.code


def _token(info: dict[str, str]) -> tuple[str, str]:
    request = urllib.request.Request(
        info["url"] + "/api/auth/token",
        method="POST",
        headers={"x-api-key": info["api_key"], "x-merchant-id": info["merchant_id"]},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        data = json.load(response)["data"]
    return data["access_token"], data["session_id"]


def test_sandbox_takes_api_limits() -> None:
    with cli_sandbox("--api-limit", "2/60") as info:
        token, session = _token(info)
        assert [_balance_status(info, token, session) for _ in range(3)] == [200, 200, 429]
    with cli_sandbox() as info:  # 88Pay's 60 a minute by default
        token, session = _token(info)
        assert {_balance_status(info, token, session) for _ in range(3)} == {200}


@pytest.mark.parametrize("flag", ["--token-limit", "--api-limit"])
@pytest.mark.parametrize("limit", ["10", "0/6", "10/0", "ten/6", "10/inf"])
def test_a_malformed_limit_is_a_usage_error_naming_the_flag(flag: str, limit: str) -> None:
    result = subprocess.run(
        [CLI, "sandbox", "--port", "0", flag, limit],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert f"{flag} takes LIMIT/SECONDS" in result.stderr
    assert "Traceback" not in result.stderr
