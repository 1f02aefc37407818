"""Serve a :class:`Sandbox` over real HTTP or HTTPS on loopback (standard library only)."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import socketserver
import ssl
import struct
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from eightyeightpay.http import HttpRequest

from .emulator import TOKEN_PATH, ConnectionFault, Fault, Sandbox
from .http_limits import MAX_LINE
from .tls import DEFAULT_HOSTNAMES, TestCertificates, make_test_ca

__all__ = ["CONTROL_PREFIX", "SandboxServer"]

CONTROL_PREFIX = "/_sandbox/"
"""Paths under this prefix control the emulator; they are never counted as API requests."""

_SocketLike = socket.socket
_MAX_BODY = 1 << 20


def _abort(connection: _SocketLike) -> None:
    """Close ``connection`` with a TCP RST instead of an orderly FIN."""
    with contextlib.suppress(OSError):
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        # socket.socket.close, not SSLSocket's: no TLS close_notify may precede the reset.
        socket.socket.close(connection)


class _HTTPServer(ThreadingHTTPServer):
    """The listening server: tracks its connection threads so that stop() can join them."""

    request_queue_size = 1024  # a stampede of fresh connections must not overflow the backlog

    daemon_threads = True

    def __init__(self, owner: SandboxServer, address: tuple[str, int], family: int) -> None:
        self.address_family = family
        self.owner = owner
        self.tls_context: ssl.SSLContext | None = None
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._connection_threads: list[threading.Thread] = []
        self._connections: set[_SocketLike] = set()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host's FQDN, which can stall on reverse DNS.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def verify_request(self, request: Any, client_address: Any) -> bool:
        if self.owner.sandbox.take_refusal():
            _abort(request)
            return False
        return True

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self.process_request_thread,
            args=(request, client_address),
            name="eightyeightpay-sandbox-connection",
            daemon=True,
        )
        with self._lock:
            self._connection_threads = [t for t in self._connection_threads if t.is_alive()]
            self._connection_threads.append(thread)
        thread.start()

    def _track(self, connection: _SocketLike, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def finish_request(self, request: Any, client_address: Any) -> None:
        connection: _SocketLike = request
        self._track(request, True)
        try:
            if self.tls_context is not None:
                request.settimeout(10.0)
                try:
                    connection = self.tls_context.wrap_socket(request, server_side=True)
                except OSError:
                    return
                self._track(connection, True)
                connection.settimeout(None)
            _Handler(connection, client_address, self)
        finally:
            self._track(request, False)
            self._track(connection, False)
            if connection is not request:
                with contextlib.suppress(OSError):
                    connection.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that vanish and stop() waking blocked reads raise OSError: not news.
        # Anything else is a bug in the sandbox and is reported as usual.
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)

    def drain(self, timeout: float) -> None:
        """Wake every connection thread and wait for them to finish."""
        with self._lock:
            connections = list(self._connections)
            threads = list(self._connection_threads)
        for connection in connections:
            with contextlib.suppress(OSError):
                socket.socket.shutdown(connection, socket.SHUT_RDWR)
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))


class _Handler(BaseHTTPRequestHandler):
    """One connection: reads requests, asks the sandbox, realises its reply."""

    # Headers and body are written separately: without TCP_NODELAY, Nagle's algorithm and
    # the client's delayed ACK would hold every kept-alive answer for ~40 ms.
    disable_nagle_algorithm = True

    protocol_version = "HTTP/1.1"
    server_version = "88Pay-Sandbox/1.0"
    server: _HTTPServer

    def version_string(self) -> str:
        """Name the emulator in the ``Server`` header."""
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:
        """Silence http.server's request log (it would go to stderr)."""

    def do_GET(self) -> None:
        """Serve a GET request."""
        self._dispatch()

    def do_POST(self) -> None:
        """Serve a POST request."""
        self._dispatch()

    def do_PUT(self) -> None:
        """Serve a PUT request."""
        self._dispatch()

    def do_PATCH(self) -> None:
        """Serve a PATCH request."""
        self._dispatch()

    def do_DELETE(self) -> None:
        """Serve a DELETE request."""
        self._dispatch()

    def _read_body(self) -> bytes | None:
        """Return the request body, or None when its framing is invalid."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return self._read_chunked()
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        try:
            size = int(length)
        except ValueError:
            return None
        if not 0 <= size <= _MAX_BODY:
            return None
        return self.rfile.read(size)

    def _read_chunked(self) -> bytes | None:
        parts: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(MAX_LINE)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                return None
            if size == 0:
                while self.rfile.readline(MAX_LINE) not in (b"\r\n", b"\n", b""):
                    pass  # trailers are ignored
                return b"".join(parts)
            total += size
            if size < 0 or total > _MAX_BODY:
                return None
            parts.append(self.rfile.read(size))
            self.rfile.readline(MAX_LINE)

    def _write(
        self,
        status: int,
        headers: tuple[tuple[str, str], ...],
        body: bytes,
        *,
        declared: int | None = None,
    ) -> None:
        self.send_response(status)
        for name, value in headers:
            if name.lower() != "content-length":
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(body) if declared is None else declared))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def _write_json(self, status: int, payload: object) -> None:
        body = json.dumps(payload, separators=(",", ":")).encode("utf-8")
        self._write(status, (("Content-Type", "application/json"),), body)

    def _abort(self) -> None:
        self.close_connection = True
        _abort(self.connection)

    def _dispatch(self) -> None:
        body = self._read_body()
        if body is None:
            self.close_connection = True
            self._write_json(400, _envelope(400, "Invalid request body framing"))
            return
        if self.path.startswith(CONTROL_PREFIX):
            self._control(body)
            return
        owner = self.server.owner
        scheme = "https" if self.server.tls_context is not None else "http"
        request = HttpRequest(
            self.command, f"{scheme}://{owner.netloc}{self.path}", tuple(self.headers.items()), body
        )
        reply = owner.sandbox.handle(request, now=owner.clock())
        if reply.connection_fault is ConnectionFault.REFUSE or reply.response is None:
            self._abort()
            return
        if reply.delay > 0 and self.server.stopping.wait(reply.delay):
            self._abort()
            return
        if reply.connection_fault is ConnectionFault.RESET:
            self._abort()
            return
        response = reply.response
        if reply.connection_fault is ConnectionFault.TRUNCATE:
            self.close_connection = True
            self._write(
                response.status, response.headers, reply.body_to_send, declared=len(response.body)
            )
            return
        self._write(response.status, response.headers, response.body)

    def _control(self, body: bytes) -> None:
        sandbox = self.server.owner.sandbox
        path = self.path.split("?", 1)[0]
        routes: dict[tuple[str, str], Callable[[], tuple[int, object]]] = {
            ("GET", "/_sandbox/stats"): lambda: (200, sandbox.stats()),
            ("POST", "/_sandbox/faults"): lambda: _inject(sandbox, body),
            ("DELETE", "/_sandbox/faults"): lambda: _clear_faults(sandbox),
            ("POST", "/_sandbox/reset"): lambda: _reset(sandbox),
        }
        route = routes.get((self.command, path))
        if route is not None:
            status, payload = route()
        elif any(known == path for _, known in routes):
            status, payload = 405, _envelope(405, "Method not allowed")
        else:
            status, payload = 404, _envelope(404, "Not found")
        self._write_json(status, payload)


def _envelope(code: int, message: str, data: object = None) -> dict[str, object]:
    payload: dict[str, object] = {
        "status": "Success" if code == 200 else "Error",
        "code": code,
        "message": message,
    }
    if data is not None:
        payload["data"] = data
    return payload


def _inject(sandbox: Sandbox, body: bytes) -> tuple[int, object]:
    try:
        spec = json.loads(body)
        if not isinstance(spec, dict):
            raise ValueError("the body must be a JSON object")
        fault = Fault.from_json(spec)
        path = spec.get("path", TOKEN_PATH)
        times = spec.get("times", 1)
        if path is not None and not isinstance(path, str):
            raise ValueError("'path' must be a string or null")
        if isinstance(times, bool) or not isinstance(times, int):
            raise ValueError("'times' must be an integer")
        sandbox.inject(fault, path=path, times=times)
    except (ValueError, UnicodeDecodeError) as error:
        return 400, _envelope(400, f"Bad fault: {error}")
    return 200, _envelope(200, "Fault injected", {"pending_faults": sandbox.pending_faults()})


def _clear_faults(sandbox: Sandbox) -> tuple[int, object]:
    sandbox.clear_faults()
    return 200, _envelope(200, "Faults cleared", {"pending_faults": 0})


def _reset(sandbox: Sandbox) -> tuple[int, object]:
    sandbox.reset_stats()
    return 200, _envelope(200, "Counters reset", sandbox.stats())


class SandboxServer:
    """Serve a :class:`Sandbox` over HTTP or HTTPS on a loopback port.

    The faults are realised for real: latency sleeps, a reset closes the socket with a TCP
    RST without answering, a refusal closes a new connection at accept (and a kept-alive one
    at its next request) before reading, a truncated answer announces more bytes than it
    sends and closes. ``GET /_sandbox/stats``, ``POST /_sandbox/faults``,
    ``DELETE /_sandbox/faults`` and ``POST /_sandbox/reset`` control the emulator.

    With ``tls=True`` (implied by ``certificates``) the server presents a certificate from
    ``certificates``, or from a throw-away CA made in a temporary directory that
    :meth:`stop` removes; clients trust :attr:`certificates` ``.ca_file``.
    """

    def __init__(
        self,
        sandbox: Sandbox | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        tls: bool = False,
        certificates: TestCertificates | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._sandbox = sandbox if sandbox is not None else Sandbox()
        self._host = host
        self._requested_port = port
        self._tls = tls or certificates is not None
        self._certificates = certificates
        self._temp_dir: Path | None = None
        self.clock = clock
        """The clock whose time is passed to :meth:`Sandbox.handle`."""
        self._server: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._state_lock = threading.Lock()
        self._stopped = False

    @property
    def sandbox(self) -> Sandbox:
        """The emulator being served."""
        return self._sandbox

    @property
    def certificates(self) -> TestCertificates | None:
        """The certificates in use (trust ``.ca_file``), or None for plain HTTP."""
        return self._certificates if self._tls else None

    @property
    def port(self) -> int:
        """The port the server listens on (known once started)."""
        if self._server is None:
            raise RuntimeError("the sandbox server is not started")
        return self._server.server_port

    @property
    def netloc(self) -> str:
        """``host:port``, with an IPv6 host in brackets."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"{host}:{self.port}"

    @property
    def url(self) -> str:
        """The base URL, e.g. ``https://127.0.0.1:54321``."""
        return f"{'https' if self._tls else 'http'}://{self.netloc}"

    def start(self) -> SandboxServer:
        """Bind, listen and serve in a background thread; return once listening."""
        with self._state_lock:
            if self._stopped:
                raise RuntimeError("a stopped sandbox server cannot be restarted")
            if self._server is not None:
                return self
            family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
            server = _HTTPServer(self, (self._host, self._requested_port), family)
            try:
                if self._tls:
                    if self._certificates is None:
                        self._temp_dir = Path(tempfile.mkdtemp(prefix="eightyeightpay-sandbox-"))
                        names = DEFAULT_HOSTNAMES + (
                            () if self._host in DEFAULT_HOSTNAMES else (self._host,)
                        )
                        self._certificates = make_test_ca(self._temp_dir, hostname=names)
                    server.tls_context = self._certificates.server_context()
            except BaseException:
                server.server_close()
                self._remove_temp_dir()
                raise
            self._server = server
            self._thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name="eightyeightpay-sandbox-server",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving, close every connection and join the threads. Idempotent."""
        with self._state_lock:
            if self._stopped:
                return
            self._stopped = True
            server, thread = self._server, self._thread
        if server is not None:
            server.stopping.set()
            server.shutdown()
            server.server_close()
            server.drain(timeout)
        if thread is not None:
            thread.join(timeout)
        self._remove_temp_dir()

    close = stop

    def _remove_temp_dir(self) -> None:
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
            self._temp_dir = None

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.url if self._server is not None else "not started"
        return f"SandboxServer({where}, {self._sandbox!r})"
