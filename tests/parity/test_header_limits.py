"""Requests too large for the sandbox server: the in-process path answers as the server does.

``SandboxServer`` serves with ``http.server``, which answers ``431`` to a header line over
65,536 bytes (CRLF included) or to more than 99 header fields (100 lines read, the blank
line that ends the header counted), and ``414`` to a request line over 65,536 bytes. Each
case runs on the three managers, in-process and over loopback HTTP through their own
transports, and expects the same status on both paths. The fields counted are the call's
own (``Authorization``, ``x-session-id``, ``Content-Type``, ``Content-Length`` and the
caller's) and those the HTTP client adds: ``Host``, ``Accept-Encoding`` and ``User-Agent``
from urllib3 (threaded manager), ``Host`` from h11 (asyncio and trio).
"""

from __future__ import annotations

import pytest

from eightyeightpay import ApiError
from eightyeightpay.plugins.sandbox import DEFAULT_MERCHANT_ID, Sandbox
from eightyeightpay.plugins.sandbox.http_limits import (
    H11_ADDS,
    MAX_HEADER_LINES,
    MAX_LINE,
    URLLIB3_ADDS,
)
from tests.parity.harness import PATHS, RUNTIMES, Harness, run_scenario

BALANCE = f"/api/balance?id={DEFAULT_MERCHANT_ID}"
OWN_FIELDS = 4  # Authorization, x-session-id, Content-Type, Content-Length: every call's
PAD = "X-Pad"

pytestmark = [
    pytest.mark.parametrize("via", PATHS),
    pytest.mark.parametrize("runtime", RUNTIMES),
]


def client_adds(runtime: str) -> int:
    """Header fields the runtime's HTTP client adds to a call (urllib3's, or h11's)."""
    return len(URLLIB3_ADDS if runtime == "sync" else H11_ADDS)


def outcome(
    runtime: str, via: str, target: str = BALANCE, **call: object
) -> tuple[int, dict[str, int]]:
    """The status a call to ``target`` with ``call``'s options gets ``via`` one path, and the
    emulator's counters after it."""
    statuses: list[int] = []

    async def scenario(h: Harness) -> None:
        try:
            response = await h.request("POST", target, deadline=0, **call)
            statuses.append(response.status)
        except ApiError as error:
            assert error.status is not None and not error.may_have_been_processed
            statuses.append(error.status)

    sandbox = Sandbox()
    run_scenario(runtime, scenario, sandbox=sandbox, over_http=via == "http")
    [status] = statuses
    return status, sandbox.stats()


def test_a_header_line_of_65536_bytes_is_served(runtime: str, via: str) -> None:
    value = "a" * (MAX_LINE - len(f"{PAD}: \r\n"))  # the line, CRLF included: 65,536 bytes
    status, stats = outcome(runtime, via, headers={PAD: value})
    assert status == 200 and stats["api_requests"] == 1


def test_a_header_line_of_65537_bytes_is_refused_431(runtime: str, via: str) -> None:
    value = "a" * (MAX_LINE - len(f"{PAD}: \r\n") + 1)
    status, stats = outcome(runtime, via, headers={PAD: value})
    assert status == 431 and stats["api_requests"] == 0  # the emulator never saw it


def test_99_header_fields_are_served(runtime: str, via: str) -> None:
    """99 fields, 100 lines with the blank one: the most ``http.server`` reads."""
    extra = MAX_HEADER_LINES - 1 - OWN_FIELDS - client_adds(runtime)
    status, stats = outcome(runtime, via, headers={f"X-H{i}": "v" for i in range(extra)})
    assert status == 200 and stats["api_requests"] == 1


def test_100_header_fields_are_refused_431(runtime: str, via: str) -> None:
    extra = MAX_HEADER_LINES - OWN_FIELDS - client_adds(runtime)
    status, stats = outcome(runtime, via, headers={f"X-H{i}": "v" for i in range(extra)})
    assert status == 431 and stats["api_requests"] == 0


def long_target(line: int) -> str:
    """The balance path with a query parameter that makes its request line ``line`` bytes."""
    padding = line - len(f"POST {BALANCE}&pad= HTTP/1.1\r\n")
    return f"{BALANCE}&pad={'a' * padding}"


def test_a_request_line_of_65536_bytes_is_served(runtime: str, via: str) -> None:
    status, stats = outcome(runtime, via, long_target(MAX_LINE))
    assert status == 200 and stats["api_requests"] == 1


def test_a_request_line_of_65537_bytes_is_refused_414(runtime: str, via: str) -> None:
    status, stats = outcome(runtime, via, long_target(MAX_LINE + 1))
    assert status == 414 and stats["api_requests"] == 0
