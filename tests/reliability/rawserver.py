"""A tiny loopback TLS server for behaviours the emulator lacks.

Each connection is handed to a *behaviour*: a function of the connection that does
whatever misbehaviour a test needs (never answer the TLS handshake, answer with any status
and headers, drip bytes slowly, stream megabytes). Every behaviour is bounded in time and
stops as soon as the server is closed; :meth:`RawServer.close` closes every socket and joins
every thread, so nothing outlives the test that opened the server.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import struct
import threading
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType
from typing import Self

__all__ = [
    "Behaviour",
    "Conversation",
    "RawServer",
    "answer",
    "closed_port",
    "drip",
    "in_turn",
    "never_handshake",
    "reset_in_handshake",
    "response_bytes",
    "stream_body",
]

MAX_REQUEST_HEAD = 64 * 1024


class Conversation:
    """One accepted connection, as a behaviour sees it."""

    def __init__(
        self,
        raw: socket.socket,
        tls: ssl.SSLContext,
        stopping: threading.Event,
        register: Callable[[socket.socket], None],
    ) -> None:
        self.raw = raw
        self.tls = tls
        self.stopping = stopping
        """Set when the server closes: a behaviour must return soon after."""
        self.secure: ssl.SSLSocket | None = None
        self._register = register

    def handshake(self, timeout: float = 5.0) -> ssl.SSLSocket:
        """Complete the TLS handshake (server side)."""
        self.raw.settimeout(timeout)
        self.secure = self.tls.wrap_socket(self.raw, server_side=True)
        self._register(self.secure)  # so that close() can wake a blocked read or write
        return self.secure

    def read_request_head(self) -> bytes:
        """Read the request up to the blank line ending its headers (the token request has
        no body)."""
        assert self.secure is not None
        data = b""
        while b"\r\n\r\n" not in data and len(data) < MAX_REQUEST_HEAD:
            chunk = self.secure.recv(4096)
            if not chunk:
                break
            data += chunk
        return data

    def send(self, data: bytes) -> None:
        """Send ``data`` over TLS."""
        assert self.secure is not None
        self.secure.sendall(data)

    def pause(self, seconds: float) -> bool:
        """Sleep ``seconds``; False when the server closed meanwhile."""
        return not self.stopping.wait(seconds)


Behaviour = Callable[[Conversation], None]
"""What the server does with one connection; exceptions (a vanished client) are ignored."""


def response_bytes(
    status: int, headers: Sequence[tuple[str, str]], body: bytes, *, length: int | None = None
) -> bytes:
    """An HTTP/1.1 response; ``length`` overrides the announced Content-Length."""
    lines = [f"HTTP/1.1 {status} Status", *(f"{name}: {value}" for name, value in headers)]
    lines.append(f"Content-Length: {len(body) if length is None else length}")
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def never_handshake(conversation: Conversation) -> None:
    """Accept TCP, then never answer the ClientHello: the request can never be sent."""
    conversation.stopping.wait(30.0)


def reset_in_handshake(conversation: Conversation) -> None:
    """Read the ClientHello, then reset the connection (RST): nothing can have been sent."""
    conversation.raw.settimeout(5.0)
    conversation.raw.recv(4096)
    conversation.raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conversation.raw.close()


def answer(*responses: bytes) -> Behaviour:
    """Complete TLS, read the request and answer at once: the n-th connection gets the
    n-th response (the last one repeats). Build responses with :func:`response_bytes`."""
    if not responses:
        raise ValueError("answer() needs at least one response")

    def respond(response: bytes) -> Behaviour:
        def behaviour(conversation: Conversation) -> None:
            conversation.handshake()
            conversation.read_request_head()
            conversation.send(response)

        return behaviour

    return in_turn(*(respond(response) for response in responses))


def in_turn(*behaviours: Behaviour) -> Behaviour:
    """The n-th connection gets the n-th behaviour (the last one repeats)."""
    if not behaviours:
        raise ValueError("in_turn() needs at least one behaviour")
    lock = threading.Lock()
    served = 0

    def behaviour(conversation: Conversation) -> None:
        nonlocal served
        with lock:
            index = min(served, len(behaviours) - 1)
            served += 1
        behaviours[index](conversation)

    return behaviour


def drip(
    data: bytes,
    *,
    start: int,
    stop: int,
    interval: float,
    step: int,
    ended: threading.Event,
) -> Behaviour:
    """Send ``data[:start]`` at once, then ``data[start:stop]`` ``step`` bytes every
    ``interval`` seconds, then the rest at once.

    ``ended`` is set just before the last bytes go out: a client that has its answer while
    ``ended`` is not set gave up before the drip was over. Each pause is far shorter than
    any read timeout, so only a deadline on the whole exchange stops a client from waiting
    for the drip to end.
    """

    def behaviour(conversation: Conversation) -> None:
        conversation.handshake()
        conversation.read_request_head()
        conversation.send(data[:start])
        for offset in range(start, stop, step):
            if not conversation.pause(interval):
                raise ConnectionAbortedError("the server is closing")
            conversation.send(data[offset : min(offset + step, stop)])
        ended.set()
        conversation.send(data[stop:])

    return behaviour


def stream_body(
    status: int, headers: Sequence[tuple[str, str]], size: int, *, chunk: int = 64 * 1024
) -> Behaviour:
    """Announce ``size`` bytes of body and stream them as fast as the client reads."""

    def behaviour(conversation: Conversation) -> None:
        conversation.handshake()
        conversation.read_request_head()
        conversation.send(response_bytes(status, headers, b"", length=size))
        block = b" " * chunk
        sent = 0
        while sent < size and not conversation.stopping.is_set():
            piece = block[: min(chunk, size - sent)]
            conversation.send(piece)
            sent += len(piece)

    return behaviour


class RawServer:
    """Serve ``behaviour`` over TLS on a loopback port, one thread per connection."""

    def __init__(self, behaviour: Behaviour, tls: ssl.SSLContext) -> None:
        self._behaviour = behaviour
        self._tls = tls
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self.connections = 0
        """Connections accepted so far."""
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=16)
        self.port: int = self._listener.getsockname()[1]
        self._acceptor = threading.Thread(target=self._accept, name="raw-server", daemon=True)
        self._acceptor.start()

    @property
    def url(self) -> str:
        """The base URL to give a manager."""
        return f"https://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                raw, _ = self._listener.accept()
            except OSError:
                return  # the listener was closed
            with self._lock:
                if self._stopping.is_set():
                    raw.close()
                    return
                self.connections += 1
                self._sockets.append(raw)
                thread = threading.Thread(
                    target=self._serve, args=(raw,), name="raw-connection", daemon=True
                )
                self._threads.append(thread)
            thread.start()

    def _serve(self, raw: socket.socket) -> None:
        conversation = Conversation(raw, self._tls, self._stopping, self._register)
        try:
            self._behaviour(conversation)
        except (OSError, ValueError):
            pass  # the client went away (or the server is closing): not news
        finally:
            if conversation.secure is not None:
                with contextlib.suppress(OSError):
                    conversation.secure.close()
            with contextlib.suppress(OSError):
                raw.close()

    def _register(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
        if self._stopping.is_set():
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        """Stop accepting, wake every behaviour, close every socket, join every thread."""
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        with self._lock:
            sockets, threads = list(self._sockets), list(self._threads)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._acceptor.join(5.0)
        for thread in threads:
            thread.join(5.0)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.close()
        assert not self._acceptor.is_alive(), "the raw server's acceptor did not stop"
        assert not any(thread.is_alive() for thread in threads), "a raw connection did not stop"

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


@contextlib.contextmanager
def closed_port() -> Iterator[int]:
    """A loopback port nothing listens on (bound, then released): connecting is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    yield port
