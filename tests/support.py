"""Shared helpers for the test suite: hand-made token responses and fake transports."""

from __future__ import annotations

import base64
import json
import random
import threading
from collections.abc import Awaitable, Callable, Generator
from typing import Any

import attrs

from eightyeightpay import MemoryStore
from eightyeightpay.api import (
    ApiCoolDown,
    ApiEffect,
    ApiPermit,
    ApiResponse,
    ForgetApiSend,
    InvalidateToken,
    NeedToken,
    Now,
    ReserveApiCall,
    SendApiRequest,
    WallNow,
    api_call,
    send_left,
)
from eightyeightpay.credentials import Credentials
from eightyeightpay.errors import EightyEightPayError
from eightyeightpay.fleet import Sleep
from eightyeightpay.governor import HOUR, MINUTE, RateWindow
from eightyeightpay.http import HttpRequest, HttpResponse
from eightyeightpay.machine import TokenMachine
from eightyeightpay.plugins.sandbox import SandboxServer
from eightyeightpay.policy import Deadline, Policy
from eightyeightpay.tokens import Token

API_KEY = "sk_test_unit_9f8e7d6c5b4a"
MERCHANT = "MCH-COL-TEST-12345"
CREDENTIALS = Credentials(API_KEY, MERCHANT)
POLICY = Policy()


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt(
    merchant: str = MERCHANT, iat: float = 1_800_000_000, life: float = 60, nonce: int = 0
) -> str:
    header = b64(json.dumps({"alg": "ES256", "typ": "JWT"}).encode())
    payload = b64(
        json.dumps({"merchant_id": merchant, "iat": iat, "exp": iat + life, "jti": nonce}).encode()
    )
    return f"{header}.{payload}.{b64(b'signature')}"


def token_body(access_token: str, expires_in: object = 60, session: str = "sess_1") -> bytes:
    return json.dumps(
        {
            "status": "Success",
            "code": 200,
            "message": "Token generated successfully",
            "data": {"access_token": access_token, "expires_in": expires_in, "session_id": session},
        }
    ).encode()


def ok_response(nonce: int = 0, life: float = 60) -> HttpResponse:
    return HttpResponse(
        200,
        (("Content-Type", "application/json"),),
        token_body(jwt(nonce=nonce, life=life), life, f"sess_{nonce}"),
    )


def error_response(status: int, message: str, **extra: object) -> HttpResponse:
    body = {"status": "Error", "code": status, "message": message, **extra}
    return HttpResponse(status, (("Content-Type", "application/json"),), json.dumps(body).encode())


class ScriptedTransport:
    """A transport answering from a function of the request; counts token requests."""

    def __init__(self, answer: Callable[[HttpRequest, int], HttpResponse] | None = None) -> None:
        self.token_requests = 0
        self.api_requests = 0
        self.lock = threading.Lock()
        self.answer = answer or (lambda request, n: ok_response(n))
        self.closed = False

    def send(self, request: HttpRequest, *, timeout: float) -> HttpResponse:
        with self.lock:
            if request.path == "/api/auth/token":
                self.token_requests += 1
                n = self.token_requests
            else:
                self.api_requests += 1
                n = self.api_requests
        return self.answer(request, n)

    def close(self) -> None:
        self.closed = True


class NeverAnswers:
    """An async transport whose every request waits on ``wait()`` (which must never return)."""

    def __init__(self, wait: Callable[[], Awaitable[object]]) -> None:
        self._wait = wait

    async def send(self, request: HttpRequest, *, timeout: float) -> HttpResponse:
        await self._wait()
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        return None


def https_options(server: SandboxServer) -> dict[str, Any]:
    """A manager's options for the HTTPS emulator ``server``: its URL and CA, a memory store."""
    assert server.certificates is not None
    return {
        "base_url": server.url,
        "ca_bundle": str(server.certificates.ca_file),
        "store": MemoryStore(),
    }


def rng(seed: int = 7) -> random.Random:
    return random.Random(seed)


def local_wait(steps: Generator[Any, Any, float]) -> float:
    """The API governor's answer on a machine without a fleet store (it yields nothing)."""
    try:
        effect = next(steps)
    except StopIteration as done:
        return float(done.value)
    raise AssertionError(f"a local machine asked its store: {effect!r}")


class FakeApiDriver:
    """Performs the core's API call effects (``api_call``) on a fake clock, ``now``.

    What a test varies, it overrides: :meth:`token` (a caller's ``get_token()``: a token, or
    an ``EightyEightPayError`` raised into the protocol as the managers do) and :meth:`answer`
    (the server's answer to one API request, an ``HttpResponse`` or a transport error, moving
    ``now`` by the exchange's latency). The rest is the managers' bookkeeping: the governor
    of a local ``machine``, its cool-down, backoff sleeps (kept in ``slept``), invalidations.
    """

    def __init__(self, machine: TokenMachine) -> None:
        self.machine = machine
        self.now = 0.0
        self.wall_at_zero = 1_800_000_000.0
        """The wall clock (epoch seconds) when ``now`` is 0: a Retry-After date is read on it."""
        self.slept: list[tuple[float, float]] = []
        """(when, seconds) of each backoff sleep."""
        self.invalidated = 0

    def token(self, until: Deadline) -> Token:
        raise NotImplementedError

    def answer(self, request: HttpRequest, timeout: float) -> object:
        raise NotImplementedError

    def charge(
        self, path: str, until: Deadline, *, timeout: float = 30.0
    ) -> ApiResponse | Exception:
        """A POST of ``{"amount": 1}`` to ``path`` within ``until``, on the machine's policy."""
        return self.run(
            api_call(
                "https://api-sandbox.88pay.io",
                "POST",
                path,
                json={"amount": 1},
                until=until,
                policy=self.machine.policy,
                rng=random.Random(2),
                timeout=timeout,
            )
        )

    def run(self, steps: Generator[ApiEffect, Any, ApiResponse]) -> ApiResponse | Exception:
        """The call's answer, or the typed error it ended with."""
        result: Any = None
        failure: EightyEightPayError | None = None
        while True:
            try:
                effect = steps.throw(failure) if failure is not None else steps.send(result)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
            except EightyEightPayError as error:
                return error
            failure = None
            match effect:
                case ReserveApiCall():
                    wait = local_wait(self.machine.reserve_api(self.now))
                    result = ApiPermit(self.now, wait)
                case NeedToken(until):
                    try:
                        result = self.token(until)
                    except EightyEightPayError as error:
                        failure = error
                case SendApiRequest(request, timeout, reserved_at):
                    result = self.answer(request, timeout)
                    self.machine.api_send_ended(reserved_at, self.now, left=send_left(result))
                case Sleep(seconds):
                    self.slept.append((self.now, seconds))
                    self.now += seconds
                    result = None
                case ApiCoolDown(seconds):
                    local_wait(self.machine.api_cool_down(self.now, seconds))
                    result = self.now
                case Now():
                    result = self.now
                case WallNow():
                    result = self.wall_at_zero + self.now
                case ForgetApiSend(reserved_at):
                    self.machine.api_send_ended(reserved_at, self.now, left=False)
                    result = None
                case InvalidateToken():
                    self.invalidated += 1
                    result = True


@attrs.frozen
class ScanningWindow(RateWindow):
    """A :class:`RateWindow` answering by scanning every send (the governor before it
    bisected): the unit tests' oracle and the governor benchmark's yardstick."""

    def record(self, now: float, hour: float = HOUR) -> ScanningWindow:
        """The window after a send at ``now``: every send is compared, the tuple rebuilt."""
        return ScanningWindow((*(t for t in self.sends if t > now - hour), now))

    def next_allowed(
        self,
        now: float,
        per_minute: int,
        per_hour: int,
        minute_span: float = MINUTE,
        hour_span: float = HOUR,
    ) -> float:
        """As :meth:`RateWindow.next_allowed`, from two scans of the sends."""
        hour = [t for t in self.sends if t > now - hour_span]
        minute = [t for t in hour if t > now - minute_span]
        earliest = now
        if len(minute) >= per_minute:
            earliest = max(earliest, minute[len(minute) - per_minute] + minute_span)
        if len(hour) >= per_hour:
            earliest = max(earliest, hour[len(hour) - per_hour] + hour_span)
        return earliest

    def count(self, now: float, span: float) -> int:
        """As :meth:`RateWindow.count`, from a scan of the sends."""
        return sum(1 for t in self.sends if t > now - span)
