"""What users would write or use instead of eightyeightpay, for side-by-side figures.

- :class:`ReferenceCache` is 88Pay's documented reference pattern, written from its
  description: an object holding the response's ``data`` dict and an expiry float, serving
  the cache while ``time.time() < expires_at - 10`` and otherwise fetching synchronously,
  with no lock (so a 60 s token is cached for 50 s).
- :func:`botocore_credentials` and :func:`google_credentials` wrap a token fetch in
  botocore's ``RefreshableCredentials`` and a google-auth ``Credentials`` subclass, the way
  their users do. Both libraries are benchmark-only (the ``bench`` extra) and are imported
  lazily, so this module type-checks and imports without them.
- :class:`H11Client` is a minimal keep-alive HTTP/1.1 client over h11 for asyncio and trio:
  the "raw h11 exchange" of the overhead benchmark and the HTTP client of the async
  reference pattern.
"""

from __future__ import annotations

import asyncio
import datetime
import importlib
import json
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any

import h11
import urllib3

from eightyeightpay.http import HttpRequest
from eightyeightpay.plugins.sandbox import (
    DEFAULT_API_KEY,
    DEFAULT_MERCHANT_ID,
    FakeClock,
    SandboxTransport,
)

TOKEN_PATH = "/api/auth/token"
TOKEN_HEADERS = {"x-api-key": DEFAULT_API_KEY, "x-merchant-id": DEFAULT_MERCHANT_ID}
Data = dict[str, Any]


class FetchFailed(Exception):
    """The token endpoint answered something other than 200 (e.g. 429)."""

    def __init__(self, status: int) -> None:
        super().__init__(f"token request failed with HTTP {status}")
        self.status = status


def _data(status: int, body: bytes) -> Data:
    if status != 200:
        raise FetchFailed(status)
    data: Data = json.loads(body)["data"]
    return data


# --------------------------------------------------------------------------- the reference


class ReferenceCache:
    """88Pay's reference pattern: cache ``data`` until 10 s before it expires; no lock."""

    def __init__(self, fetch: Callable[[], Data]) -> None:
        self.data: Data | None = None
        self.expires_at = 0.0
        self._fetch = fetch

    def get(self) -> Data:
        """The cached ``data`` dict, or a new one fetched in the caller's thread."""
        if self.data is not None and time.time() < self.expires_at - 10:
            return self.data
        data = self._fetch()
        self.data = data
        self.expires_at = time.time() + data["expires_in"]
        return data


class SimulatedReferenceCache:
    """The same pattern on an injected clock, for the simulated hour."""

    def __init__(self, fetch: Callable[[], Data], clock: Callable[[], float]) -> None:
        self.data: Data | None = None
        self.expires_at = 0.0
        self._fetch = fetch
        self._clock = clock

    def get(self) -> Data:
        """The cached ``data`` dict, or a new one fetched in the caller's thread."""
        if self.data is not None and self._clock() < self.expires_at - 10:
            return self.data
        data = self._fetch()
        self.data = data
        self.expires_at = self._clock() + data["expires_in"]
        return data


class AsyncReferenceCache:
    """The reference pattern with ``await`` in front: no lock, so every task fetches."""

    def __init__(self, fetch: Callable[[], Awaitable[Data]]) -> None:
        self.data: Data | None = None
        self.expires_at = 0.0
        self._fetch = fetch

    async def get(self) -> Data:
        """The cached ``data`` dict, or a new one fetched by this task."""
        if self.data is not None and time.time() < self.expires_at - 10:
            return self.data
        data = await self._fetch()
        self.data = data
        self.expires_at = time.time() + data["expires_in"]
        return data


def urllib3_fetcher(pool: urllib3.PoolManager, base_url: str) -> Callable[[], Data]:
    """A token fetch over urllib3, as the reference pattern's users write it."""

    def fetch() -> Data:
        response = pool.request("POST", base_url + TOKEN_PATH, headers=TOKEN_HEADERS)
        return _data(response.status, response.data)

    return fetch


def sandbox_fetcher(transport: SandboxTransport, base_url: str) -> Callable[[], Data]:
    """A token fetch handed straight to the in-process emulator (simulated time)."""
    request = HttpRequest("POST", base_url + TOKEN_PATH, tuple(TOKEN_HEADERS.items()), b"")

    def fetch() -> Data:
        response = transport.send(request, timeout=10.0)
        return _data(response.status, response.body)

    return fetch


# --------------------------------------------------------------------------- botocore


def _iso(epoch: float) -> str:
    return datetime.datetime.fromtimestamp(epoch, tz=datetime.UTC).isoformat()


def botocore_credentials(
    fetch: Callable[[], Data], clock: Callable[[], float] | None = None
) -> Any:
    """botocore ``RefreshableCredentials`` whose refresh function fetches an 88Pay token.

    The refresh function returns botocore's credentials metadata (the token as
    ``token``, its expiry as ``expiry_time``); callers use ``get_frozen_credentials()``.
    With ``clock`` (simulated time), botocore's time fetcher reads it too.
    """
    credentials = importlib.import_module("botocore.credentials")
    now: Callable[[], float] = clock or time.time

    def refresh() -> dict[str, str]:
        data = fetch()
        return {
            "access_key": DEFAULT_MERCHANT_ID,
            "secret_key": data["session_id"],
            "token": data["access_token"],
            "expiry_time": _iso(now() + float(data["expires_in"])),
        }

    if clock is None:
        return credentials.RefreshableCredentials.create_from_metadata(
            refresh(), refresh, "eightyeightpay-benchmark"
        )
    metadata = refresh()
    return credentials.RefreshableCredentials(
        metadata["access_key"],
        metadata["secret_key"],
        metadata["token"],
        datetime.datetime.fromisoformat(metadata["expiry_time"]),
        refresh,
        "eightyeightpay-benchmark",
        time_fetcher=lambda: datetime.datetime.fromtimestamp(clock(), tz=datetime.UTC),
    )


# --------------------------------------------------------------------------- google-auth


def google_credentials(fetch: Callable[[], Data], clock: Callable[[], float] = time.time) -> Any:
    """A google-auth ``Credentials`` subclass whose ``refresh()`` fetches an 88Pay token.

    Not refreshed yet: the first ``before_request`` (or an explicit ``refresh``) fetches.
    """
    base = importlib.import_module("google.auth.credentials").Credentials

    def refresh(self: Any, request: Any) -> None:
        data = fetch()
        self.token = data["access_token"]
        expiry = datetime.datetime.fromtimestamp(clock() + float(data["expires_in"]), datetime.UTC)
        self.expiry = expiry.replace(tzinfo=None)  # google-auth compares naive UTC

    cls = type("EightyEightPayCredentials", (base,), {"refresh": refresh})
    return cls()


class GoogleClock:
    """Make google-auth read a simulated clock (``google.auth._helpers.utcnow``) in a block."""

    def __init__(self, clock: FakeClock) -> None:
        self._clock = clock
        self._helpers: Any = importlib.import_module("google.auth._helpers")
        self._saved: Any = None

    def __enter__(self) -> None:
        clock = self._clock
        self._saved = self._helpers.utcnow
        self._helpers.utcnow = lambda: datetime.datetime.fromtimestamp(
            clock(), datetime.UTC
        ).replace(tzinfo=None)

    def __exit__(self, *exc_info: object) -> None:
        self._helpers.utcnow = self._saved


# --------------------------------------------------------------------------- raw h11


class _Stream:
    """A connected TLS byte stream of either runtime."""

    def __init__(
        self,
        send_all: Callable[[bytes], Awaitable[None]],
        receive_some: Callable[[int], Awaitable[bytes]],
        aclose: Callable[[], Awaitable[None]],
    ) -> None:
        self.send_all = send_all
        self.receive_some = receive_some
        self.aclose = aclose
        self.protocol = h11.Connection(our_role=h11.CLIENT)


async def _open_asyncio(host: str, port: int, context: ssl.SSLContext) -> _Stream:
    reader, writer = await asyncio.open_connection(host, port, ssl=context)

    async def send_all(data: bytes) -> None:
        writer.write(data)
        await writer.drain()

    async def aclose() -> None:
        writer.close()

    return _Stream(send_all, reader.read, aclose)


async def _open_trio(host: str, port: int, context: ssl.SSLContext) -> _Stream:
    import trio

    stream = await trio.open_ssl_over_tcp_stream(host, port, ssl_context=context)

    async def receive_some(max_bytes: int) -> bytes:
        return bytes(await stream.receive_some(max_bytes))

    return _Stream(stream.send_all, receive_some, stream.aclose)


class H11Client:
    """Keep-alive HTTP/1.1 over h11 to one origin, at most ``limit`` connections at once.

    ``runtime`` is ``"asyncio"`` or ``"trio"``. Returns ``(status, body)``; no timeouts,
    no retries: the smallest correct client, the yardstick for the library's transport.
    """

    def __init__(self, runtime: str, host: str, port: int, ca_file: str, limit: int = 100) -> None:
        self._open = _open_asyncio if runtime == "asyncio" else _open_trio
        self._host, self._port = host, port
        self._host_header = f"{host}:{port}"
        self._context = ssl.create_default_context(cafile=ca_file)
        self._idle: list[_Stream] = []
        self._semaphore: Any
        if runtime == "asyncio":
            self._semaphore = asyncio.Semaphore(limit)
        else:
            import trio

            self._semaphore = trio.Semaphore(limit)

    async def post(
        self, path: str, headers: list[tuple[str, str]], body: bytes
    ) -> tuple[int, bytes]:
        """Send one POST; return its status and body."""
        async with self._semaphore:
            stream = (
                self._idle.pop()
                if self._idle
                else await self._open(self._host, self._port, self._context)
            )
            protocol = stream.protocol
            all_headers = [
                ("Host", self._host_header),
                ("Content-Length", str(len(body))),
                *headers,
            ]
            data = (
                protocol.send(h11.Request(method="POST", target=path, headers=all_headers)) or b""
            )
            if body:
                data += protocol.send(h11.Data(data=body)) or b""
            data += protocol.send(h11.EndOfMessage()) or b""
            await stream.send_all(data)
            status, chunks = 0, list[bytes]()
            while True:
                event = protocol.next_event()
                if event is h11.NEED_DATA:
                    protocol.receive_data(await stream.receive_some(65536))
                elif isinstance(event, h11.Response):
                    status = event.status_code
                elif isinstance(event, h11.Data):
                    chunks.append(bytes(event.data))
                elif isinstance(event, h11.EndOfMessage):
                    break
                elif isinstance(event, h11.ConnectionClosed):
                    raise ConnectionError("closed before the response ended")
            if protocol.our_state is h11.DONE and protocol.their_state is h11.DONE:
                protocol.start_next_cycle()
                self._idle.append(stream)
            else:
                await stream.aclose()
            return status, b"".join(chunks)

    def fetcher(self) -> Callable[[], Awaitable[Data]]:
        """An async token fetch over this client."""
        headers = list(TOKEN_HEADERS.items())

        async def fetch() -> Data:
            status, body = await self.post(TOKEN_PATH, headers, b"")
            return _data(status, body)

        return fetch

    async def aclose(self) -> None:
        """Close the idle connections."""
        idle, self._idle = self._idle, []
        for stream in idle:
            await stream.aclose()
