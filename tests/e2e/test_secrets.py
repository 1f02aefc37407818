"""No token or API key in any log line, repr, str or exception message, at any level."""

from __future__ import annotations

import contextlib
import io
import logging
import re

import pytest

from eightyeightpay import ConfigurationError, Credentials, EightyEightPayError, TokenManager
from eightyeightpay.adapters import cli
from eightyeightpay.adapters.demo import run_demo
from eightyeightpay.http import HttpRequest, HttpResponse
from eightyeightpay.plugins.sandbox import (
    DEFAULT_API_KEY,
    DEFAULT_MERCHANT_ID,
    KYC_PENDING_API_KEY,
    KYC_PENDING_MERCHANT_ID,
    Fault,
    SandboxServer,
)
from tests.conftest import InProcess

JWT = re.compile(r"eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}")


class Recorder:
    """Wraps a transport and remembers every secret that crossed it."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.secrets: set[str] = set()

    def send(self, request: HttpRequest, *, timeout: float) -> HttpResponse:
        for name in ("x-api-key", "authorization", "x-session-id"):
            value = request.header(name)
            if value:
                self.secrets.add(value.removeprefix("Bearer "))
        response: HttpResponse = self.inner.send(request, timeout=timeout)  # type: ignore[attr-defined]
        self.secrets.update(JWT.findall(response.body.decode(errors="replace")))
        self.secrets.update(
            re.findall(r"sess_[0-9a-f-]{8,}", response.body.decode(errors="replace"))
        )
        return response

    def close(self) -> None:
        self.inner.close()  # type: ignore[attr-defined]


def full_flow(inproc: InProcess, recorder: Recorder, shown: list[str]) -> None:
    manager = inproc.manager(transport=recorder)
    token = manager.get_token()
    shown += [repr(token), str(token), repr(manager), str(manager.credentials)]
    inproc.clock.advance(token.fresh_until - inproc.clock() + 0.1)
    manager.get_token()
    inproc.background.run_pending()
    shown.append(repr(manager.request("POST", f"/api/balance?id={DEFAULT_MERCHANT_ID}")))
    shown.append(
        repr(
            manager.request(
                "POST",
                "/api/transactions/charges",
                json={
                    "flow": "PAYIN",
                    "method_code": "PSE",
                    "amount": 5,
                    "currency": "COP",
                    "country": "COL",
                },
            )
        )
    )
    manager.invalidate(manager.get_token())
    for fault in (
        Fault.status(500),
        Fault.reset(),
        Fault.truncated(),
        Fault.malformed(
            b'{"status":"Success","code":200,"data":{"access_token":"'
            + token.access_token.encode()
            + b'"}}'
        ),
    ):
        inproc.clock.advance(120)
        inproc.sandbox.inject(fault)
        try:
            manager.get_token()
        except EightyEightPayError as error:
            shown += [str(error), repr(error), repr(error.args)]
    denied = inproc.manager(KYC_PENDING_API_KEY, KYC_PENDING_MERCHANT_ID, transport=recorder)
    with pytest.raises(EightyEightPayError) as caught:
        denied.get_token()
    shown += [str(caught.value), repr(caught.value), repr(denied)]
    wrong = inproc.manager(DEFAULT_API_KEY[:-1] + "X", DEFAULT_MERCHANT_ID, transport=recorder)
    with pytest.raises(EightyEightPayError) as caught:
        wrong.get_token()
    shown += [str(caught.value), repr(caught.value)]
    recorder.secrets.add(DEFAULT_API_KEY[:-1] + "X")


def test_nothing_secret_reaches_logs_reprs_errors_or_output(
    inproc: InProcess,
    https_server: SandboxServer,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, every level
    recorder = Recorder(inproc.transport)
    shown: list[str] = []
    full_flow(inproc, recorder, shown)

    # the command line and the demo, at DEBUG too
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        run_demo(threads=16, tasks=200, say=print)
    assert https_server.certificates is not None
    monkeypatch.setenv("EIGHTY_EIGHT_PAY_API_KEY", DEFAULT_API_KEY)
    monkeypatch.setenv("EIGHTY_EIGHT_PAY_MERCHANT_ID", DEFAULT_MERCHANT_ID)
    monkeypatch.setenv("EIGHTY_EIGHT_PAY_BASE_URL", https_server.url)
    ca = str(https_server.certificates.ca_file)
    assert cli.main(["-v", "token", "--ca-bundle", ca]) == 0
    assert cli.main(["-v", "token", "--json", "--ca-bundle", ca]) == 0

    captured = capsys.readouterr()
    haystack = "\n".join(
        [
            caplog.text,
            *[r.getMessage() for r in caplog.records],
            *shown,
            out.getvalue(),
            captured.out,
            captured.err,
        ]
    )
    secrets = recorder.secrets | {DEFAULT_API_KEY, KYC_PENDING_API_KEY}
    assert len([s for s in secrets if s.startswith("eyJ")]) >= 3  # tokens were really issued
    assert any(r.levelno == logging.DEBUG for r in caplog.records)  # DEBUG really captured
    for secret in secrets:
        assert secret not in haystack, f"a secret ({len(secret)} chars) leaked"
    assert not JWT.search(haystack)


def test_reveal_is_the_only_way_to_print_a_token(
    https_server: SandboxServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert https_server.certificates is not None
    monkeypatch.setenv("EIGHTY_EIGHT_PAY_API_KEY", DEFAULT_API_KEY)
    monkeypatch.setenv("EIGHTY_EIGHT_PAY_MERCHANT_ID", DEFAULT_MERCHANT_ID)
    monkeypatch.setenv("EIGHTY_EIGHT_PAY_BASE_URL", https_server.url)
    ca = str(https_server.certificates.ca_file)
    assert cli.main(["token", "--reveal", "--ca-bundle", ca]) == 0
    assert JWT.search(capsys.readouterr().out)


PASSWORD = "hunter2-in-the-url"


def test_a_password_in_the_base_url_is_refused_without_showing_it(
    https_server: SandboxServer,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # https://user:password@host would show the password wherever the base URL is shown
    # (repr, stats, the refresh's DEBUG line, the doctor): every way in refuses it unshown.
    caplog.set_level(logging.DEBUG)
    host = https_server.url.removeprefix("https://")
    urls = [
        f"https://user:{PASSWORD}@api-sandbox.88pay.io",
        f"https://user:{PASSWORD}@{host}",
        f"https://{PASSWORD}@{host}",
        f"http://user:{PASSWORD}@127.0.0.1:9",  # refused before the plain-HTTP message
        f"ftp://user:{PASSWORD}@{host}",  # and before the not-https message, which shows it
    ]
    shown: list[str] = []
    for url in urls:
        for build in (
            lambda url=url: TokenManager(DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, base_url=url),
            lambda url=url: Credentials(
                DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, url, allow_http_loopback=True
            ),
            lambda url=url: TokenManager.from_env(
                {
                    "EIGHTY_EIGHT_PAY_API_KEY": DEFAULT_API_KEY,
                    "EIGHTY_EIGHT_PAY_MERCHANT_ID": DEFAULT_MERCHANT_ID,
                    "EIGHTY_EIGHT_PAY_BASE_URL": url,
                }
            ),
        ):
            with pytest.raises(ConfigurationError) as caught:
                build()
            assert "user name or password" in str(caught.value)
            shown += [str(caught.value), repr(caught.value)]

    monkeypatch.setenv("EIGHTY_EIGHT_PAY_API_KEY", DEFAULT_API_KEY)
    monkeypatch.setenv("EIGHTY_EIGHT_PAY_MERCHANT_ID", DEFAULT_MERCHANT_ID)
    monkeypatch.setenv("EIGHTY_EIGHT_PAY_BASE_URL", f"https://u:{PASSWORD}@{host}")
    assert https_server.certificates is not None
    ca = str(https_server.certificates.ca_file)
    assert cli.main(["-v", "doctor", "--ca-bundle", ca]) != 0
    assert cli.main(["-v", "token", "--ca-bundle", ca]) != 0
    captured = capsys.readouterr()
    assert "user name or password" in captured.out + captured.err
    haystack = "\n".join(
        [caplog.text, *[r.getMessage() for r in caplog.records], *shown, captured.out, captured.err]
    )
    assert PASSWORD not in haystack
    assert https_server.sandbox.stats()["token_requests"] == 0  # nothing was sent with it
