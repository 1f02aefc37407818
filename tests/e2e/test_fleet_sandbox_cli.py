"""``eightyeightpay sandbox`` with compressed token limits, as the time-compressed fleet tests run it."""

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


@pytest.mark.parametrize("limit", ["10", "0/6", "10/0", "ten/6", "10/inf"])
def test_a_malformed_token_limit_is_a_usage_error_naming_the_flag(limit: str) -> None:
    result = subprocess.run(
        [CLI, "sandbox", "--port", "0", "--token-limit", limit],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "--token-limit takes LIMIT/SECONDS" in result.stderr
    assert "Traceback" not in result.stderr
