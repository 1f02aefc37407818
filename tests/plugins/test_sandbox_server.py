"""The sandbox served over real loopback sockets, checked with urllib3."""

from __future__ import annotations

import gc
import http.client
import json
import socket
import ssl
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3
from cryptography import x509
from urllib3.exceptions import NewConnectionError, ProtocolError, ReadTimeoutError, SSLError

from eightyeightpay.http import HttpRequest
from eightyeightpay.plugins.sandbox import (
    CA_COMMON_NAME,
    DEFAULT_API_KEY,
    DEFAULT_MERCHANT_ID,
    STAT_NAMES,
    TOKEN_PATH,
    FakeClock,
    Fault,
    Sandbox,
    SandboxServer,
    http_limits,
    make_test_ca,
)

CREDENTIALS = {"x-api-key": DEFAULT_API_KEY, "x-merchant-id": DEFAULT_MERCHANT_ID}


_POOLS: list[urllib3.PoolManager] = []


def pool(**kwargs: Any) -> urllib3.PoolManager:
    """A PoolManager without retries, closed when the test ends."""
    manager = urllib3.PoolManager(retries=False, **kwargs)
    _POOLS.append(manager)
    return manager


@pytest.fixture(autouse=True)
def close_pools() -> Iterator[None]:
    yield
    while _POOLS:
        _POOLS.pop().clear()


@pytest.fixture
def server() -> Iterator[SandboxServer]:
    with SandboxServer(tls=True) as running:
        yield running


def client(server: SandboxServer, **kwargs: Any) -> urllib3.PoolManager:
    certificates = server.certificates
    assert certificates is not None
    return pool(ca_certs=str(certificates.ca_file), **kwargs)


def get_token(http: urllib3.PoolManager, server: SandboxServer) -> urllib3.BaseHTTPResponse:
    return http.request("POST", server.url + TOKEN_PATH, headers=CREDENTIALS, timeout=5)


def control(
    http: urllib3.PoolManager, server: SandboxServer, method: str, path: str, payload: object = None
) -> urllib3.BaseHTTPResponse:
    body = None if payload is None else json.dumps(payload).encode()
    return http.request(method, server.url + path, body=body, timeout=5)


def sandbox_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("eightyeightpay-sandbox")]


# --------------------------------------------------------------------------- HTTPS


def test_https_token_request_verifies_against_the_test_ca(server: SandboxServer) -> None:
    assert server.url.startswith("https://127.0.0.1:")
    response = get_token(client(server), server)
    assert response.status == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["X-RateLimit-Remaining"] == "9"
    envelope = json.loads(response.data)
    assert envelope["message"] == "Token generated successfully"
    assert envelope["data"]["access_token"].count(".") == 2
    assert server.sandbox.stats()["tokens_issued"] == 1


def test_a_client_without_the_test_ca_rejects_the_server(server: SandboxServer) -> None:
    http = pool()
    with pytest.raises(SSLError):
        get_token(http, server)
    assert server.sandbox.stats()["token_requests"] == 0


def test_api_calls_work_end_to_end_with_the_issued_session(server: SandboxServer) -> None:
    http = client(server)
    data = json.loads(get_token(http, server).data)["data"]
    headers = {
        "Authorization": f"Bearer {data['access_token']}",
        "x-session-id": data["session_id"],
        "Content-Type": "application/json",
    }
    charge = {
        "flow": "PAYIN",
        "method_code": "PSE",
        "amount": 10,
        "currency": "COP",
        "country": "COL",
    }
    response = http.request(
        "POST",
        server.url + "/api/transactions/charges",
        body=json.dumps(charge).encode(),
        headers=headers,
        timeout=5,
    )
    assert response.status == 200
    assert json.loads(response.data)["data"]["status"] == "PENDING"
    balance = http.request(
        "POST", f"{server.url}/api/balance?id={DEFAULT_MERCHANT_ID}", headers=headers, timeout=5
    )
    assert json.loads(balance.data)["data"]["merchant_id"] == DEFAULT_MERCHANT_ID
    assert server.sandbox.stats()["charges"] == 1


def test_keep_alive_serves_several_requests_on_one_connection(server: SandboxServer) -> None:
    certificates = server.certificates
    assert certificates is not None
    connections = urllib3.HTTPSConnectionPool(
        "127.0.0.1", server.port, ca_certs=str(certificates.ca_file), retries=False, maxsize=1
    )
    for _ in range(3):
        assert connections.request("POST", TOKEN_PATH, headers=CREDENTIALS, timeout=5).status == 200
    assert connections.num_connections == 1
    connections.close()


# --------------------------------------------------------------------------- control endpoints


def test_stats_endpoint_reports_counters_and_is_not_counted(server: SandboxServer) -> None:
    http = client(server)
    get_token(http, server)
    for _ in range(3):
        response = control(http, server, "GET", "/_sandbox/stats")
        assert response.status == 200
        stats = json.loads(response.data)
        assert set(stats) == set(STAT_NAMES)
        assert stats["token_requests"] == 1
        assert stats["tokens_issued"] == 1
        assert stats["api_requests"] == 0


def test_fault_endpoint_injects_a_500_for_the_next_two_token_requests(
    server: SandboxServer,
) -> None:
    http = client(server)
    injected = control(
        http,
        server,
        "POST",
        "/_sandbox/faults",
        {"kind": "status", "code": 500, "path": TOKEN_PATH, "times": 2},
    )
    assert injected.status == 200
    assert json.loads(injected.data)["data"] == {"pending_faults": 2}
    statuses = [get_token(http, server).status for _ in range(3)]
    assert statuses == [500, 500, 200]
    assert server.sandbox.stats()["faults_injected"] == 2


def test_fault_endpoint_refuses_a_bad_spec(server: SandboxServer) -> None:
    http = client(server)
    response = control(http, server, "POST", "/_sandbox/faults", {"kind": "explode"})
    assert response.status == 400
    assert json.loads(response.data)["code"] == 400
    assert server.sandbox.pending_faults() == 0


def test_delete_faults_clears_pending_faults(server: SandboxServer) -> None:
    http = client(server)
    control(http, server, "POST", "/_sandbox/faults", {"kind": "status", "code": 503, "times": 5})
    assert control(http, server, "DELETE", "/_sandbox/faults").status == 200
    assert get_token(http, server).status == 200


def test_reset_endpoint_zeroes_the_counters(server: SandboxServer) -> None:
    http = client(server)
    get_token(http, server)
    response = control(http, server, "POST", "/_sandbox/reset")
    assert response.status == 200
    assert server.sandbox.stats() == dict.fromkeys(STAT_NAMES, 0)


def test_unknown_control_paths_are_404_and_wrong_methods_405(server: SandboxServer) -> None:
    http = client(server)
    assert control(http, server, "GET", "/_sandbox/nothing").status == 404
    assert control(http, server, "POST", "/_sandbox/stats").status == 405
    assert server.sandbox.stats()["api_requests"] == 0


# --------------------------------------------------------------------------- faults for real


def test_reset_fault_breaks_the_connection_after_the_token_was_issued(
    server: SandboxServer,
) -> None:
    server.sandbox.inject(Fault.reset())
    with pytest.raises(ProtocolError):
        get_token(client(server), server)
    assert server.sandbox.stats()["tokens_issued"] == 1


def test_reset_fault_over_plain_http_is_a_connection_reset() -> None:
    with SandboxServer() as plain:
        assert plain.url.startswith("http://")
        plain.sandbox.inject(Fault.reset())
        http = pool()
        with pytest.raises(ProtocolError) as caught:
            http.request("POST", plain.url + TOKEN_PATH, headers=CREDENTIALS, timeout=5)
        assert isinstance(caught.value.args[1], ConnectionResetError)


def test_truncated_fault_is_an_incomplete_read(server: SandboxServer) -> None:
    server.sandbox.inject(Fault.truncated())
    with pytest.raises(ProtocolError, match="IncompleteRead"):
        get_token(client(server), server)
    assert server.sandbox.stats()["tokens_issued"] == 1


def test_refuse_fault_drops_a_new_connection_before_reading(server: SandboxServer) -> None:
    server.sandbox.inject(Fault.refuse())
    # The RST races the client: it sees a failed connect, an aborted one or a broken handshake.
    with pytest.raises((NewConnectionError, ProtocolError, SSLError)):
        get_token(client(server), server)
    # urllib3 can leave the socket that was reset mid-handshake to the garbage collector;
    # collect it here, where its ResourceWarning is expected, not in a later test.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
    stats = server.sandbox.stats()
    assert stats["token_requests"] == 0
    assert stats["faults_injected"] == 1
    assert get_token(client(server), server).status == 200


def test_latency_fault_delays_the_answer(server: SandboxServer) -> None:
    server.sandbox.inject(Fault.latency(0.3))
    started = time.monotonic()
    assert get_token(client(server), server).status == 200
    assert time.monotonic() - started >= 0.3


def test_latency_beyond_the_client_timeout_is_a_read_timeout(server: SandboxServer) -> None:
    server.sandbox.inject(Fault.latency(2.0))
    http = client(server)
    with pytest.raises(ReadTimeoutError):
        http.request("POST", server.url + TOKEN_PATH, headers=CREDENTIALS, timeout=0.2)


def test_malformed_fault_over_the_wire_sends_the_given_body(server: SandboxServer) -> None:
    control(
        client(server),
        server,
        "POST",
        "/_sandbox/faults",
        {"kind": "malformed", "body": '{"status":"Success"}'},
    )
    response = get_token(client(server), server)
    assert response.status == 200
    assert response.data == b'{"status":"Success"}'


# --------------------------------------------------------------------------- lifecycle, clock


def test_server_uses_the_given_clock_for_token_times() -> None:
    clock = FakeClock(1_900_000_000.0)
    with SandboxServer(Sandbox(), clock=clock) as plain:
        http = pool()
        response = http.request("POST", plain.url + TOKEN_PATH, headers=CREDENTIALS, timeout=5)
        assert response.headers["X-RateLimit-Reset"] == str(1_900_000_000 + 60)


def test_stop_joins_threads_and_removes_the_temporary_ca() -> None:
    server = SandboxServer(tls=True).start()
    certificates = server.certificates
    assert certificates is not None
    http = client(server)
    assert get_token(http, server).status == 200  # leaves an idle keep-alive connection
    server.stop()
    assert not certificates.ca_file.parent.exists()
    assert sandbox_threads() == []
    server.stop()  # idempotent


def test_stop_interrupts_a_latency_sleep() -> None:
    server = SandboxServer().start()
    server.sandbox.inject(Fault.latency(30))
    errors: list[BaseException] = []

    def call() -> None:
        try:
            pool().request("POST", server.url + TOKEN_PATH, headers=CREDENTIALS, timeout=10)
        except Exception as error:
            errors.append(error)

    caller = threading.Thread(target=call)
    caller.start()
    deadline = time.monotonic() + 5
    while server.sandbox.stats()["token_requests"] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.monotonic()
    server.stop()
    caller.join(5)
    assert time.monotonic() - started < 5
    assert len(errors) == 1
    assert sandbox_threads() == []


def test_url_before_start_is_an_error() -> None:
    with pytest.raises(RuntimeError):
        _ = SandboxServer().url


def test_given_certificates_are_used_and_kept(tmp_path: Path) -> None:
    certificates = make_test_ca(tmp_path)
    with SandboxServer(certificates=certificates) as running:
        assert running.url.startswith("https://")
        assert running.certificates == certificates
        assert get_token(client(running), running).status == 200
    assert certificates.ca_file.exists()


# --------------------------------------------------------------------------- certificates


def test_test_ca_names_and_server_names(tmp_path: Path) -> None:
    certificates = make_test_ca(tmp_path)
    ca = x509.load_pem_x509_certificate(certificates.ca_file.read_bytes())
    assert ca.subject.rfc4514_string() == f"CN={CA_COMMON_NAME}"
    server = x509.load_pem_x509_certificate(certificates.cert_file.read_bytes())
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    assert {str(ip) for ip in names.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "::1"}
    assert server.issuer == ca.subject
    assert certificates.key_file.stat().st_mode & 0o077 == 0


def test_a_wrong_host_certificate_fails_verification(tmp_path: Path) -> None:
    certificates = make_test_ca(tmp_path, hostname="wrong.example")
    with SandboxServer(certificates=certificates) as running:
        http = pool(ca_certs=str(certificates.ca_file))
        with pytest.raises(SSLError, match=r"(?i)hostname|match|IP address"):
            get_token(http, running)


def test_an_expired_certificate_fails_verification(tmp_path: Path) -> None:
    certificates = make_test_ca(tmp_path, not_after_days=-1)
    with SandboxServer(certificates=certificates) as running:
        http = pool(ca_certs=str(certificates.ca_file))
        with pytest.raises(SSLError, match=r"(?i)expired"):
            get_token(http, running)


def test_client_context_trusts_the_server(tmp_path: Path) -> None:
    certificates = make_test_ca(tmp_path)
    context = certificates.client_context()
    assert context.verify_mode is ssl.CERT_REQUIRED
    with SandboxServer(certificates=certificates) as running:
        http = pool(ssl_context=context)
        assert get_token(http, running).status == 200


def test_a_chunked_request_body_is_read_in_full(server: SandboxServer) -> None:
    http = client(server)
    response = http.request(
        "POST",
        server.url + "/_sandbox/faults",
        body=iter([b'{"kind": "status",', b' "code": 503}']),
        chunked=True,
        timeout=5,
    )
    assert response.status == 200
    assert get_token(http, server).status == 503
    assert get_token(http, server).status == 200


# ------------------------------------------------ what http.server refuses, and the in-process


def raw_exchange(server: SandboxServer, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``request`` as raw bytes over plain HTTP; the status, headers and body back."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as connection:
        connection.sendall(request)
        reader = connection.makefile("rb")
        status = int(reader.readline().split()[1])
        headers: dict[str, str] = {}
        while (line := reader.readline()) not in (b"\r\n", b""):
            name, value = line.decode("latin-1").split(":", 1)
            headers[name.lower()] = value.strip()
        body = reader.read(int(headers["content-length"]))
    return status, headers, body


def wire(method: str, target: str, headers: list[tuple[str, str]]) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", *(f"{n}: {v}" for n, v in headers), "", ""]
    return "\r\n".join(lines).encode()


def test_the_size_limits_are_http_clients() -> None:
    """The numbers the in-process transports mirror are the ones http.server reads with."""
    assert http_limits.MAX_LINE == http.client._MAXLINE  # type: ignore[attr-defined]
    assert http_limits.MAX_HEADER_LINES == http.client._MAXHEADERS  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("case", "status"),
    [("long line", 431), ("many fields", 431), ("long target", 414), ("fits", 401)],
)
def test_the_in_process_refusal_is_the_servers_answer(case: str, status: int) -> None:
    """The same request, as raw bytes to the server and to ``refusal()``: the same status,
    content type and HTML body (the server's ``send_error`` page), and a fitting request
    (99 fields of 65,536-byte lines at most) refused by neither."""
    target, fields = "/api/balance", [("Host", "127.0.0.1")]
    if case == "long line":
        fields.append(("X-Pad", "a" * (http_limits.MAX_LINE - len("X-Pad: \r\n") + 1)))
    elif case == "many fields":
        fields += [(f"X-H{i}", "v") for i in range(http_limits.MAX_HEADER_LINES - 1)]
    elif case == "long target":
        target += "?pad=" + "a" * http_limits.MAX_LINE
    else:
        fields.append(("X-Pad", "a" * (http_limits.MAX_LINE - len("X-Pad: \r\n"))))
        fields += [(f"X-H{i}", "v") for i in range(http_limits.MAX_HEADER_LINES - 3)]
    request = HttpRequest("POST", f"http://127.0.0.1{target}", tuple(fields[1:]))
    with SandboxServer(Sandbox()) as served:
        over_http = raw_exchange(served, wire("POST", target, fields))
    in_process = http_limits.refusal(request, ("Host",))
    assert over_http[0] == status
    if in_process is None:
        assert status == 401  # the emulator's answer: no credentials were sent
        return
    assert in_process.status == status
    assert in_process.header("Content-Type") == over_http[1]["content-type"]
    assert in_process.header("Connection") == over_http[1]["connection"] == "close"
    assert in_process.body == over_http[2]
    assert f"Error code: {status}".encode() in in_process.body
