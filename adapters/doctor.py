"""``eightyeightpay doctor``: 88Pay's troubleshooting steps, run against your configuration.

Each check says what it found and, when it fails, how to fix it. Later checks that depend
on a failed one are reported as not run, so the first failure is the one to fix.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import attrs

from eightyeightpay.credentials import (
    ENVIRONMENTS,
    PRODUCTION_URL,
    SANDBOX_URL,
    Credentials,
    Environment,
    _is_loopback,
    base_url_problem,
    environment_of,
    has_userinfo,
)
from eightyeightpay.errors import (
    AccessDenied,
    ConfigurationError,
    EightyEightPayError,
    InvalidCredentials,
    RateLimited,
    TLSError,
)
from eightyeightpay.plugins.memory import MemoryStore
from eightyeightpay.plugins.registry import registry
from eightyeightpay.plugins.tls import ca_bundle_problem, tls_context, tls_failure

from .cli import CA_BUNDLE_FIX, cli_message
from .config import (
    API_KEY_VARIABLE,
    BASE_URL_VARIABLE,
    MERCHANT_ID_VARIABLE,
    STORE_VARIABLE,
    read_environment,
)
from .sync import TokenManager

__all__ = ["CHECKLIST", "Check", "run_doctor"]


@attrs.frozen
class Check:
    """One troubleshooting step and its verdict."""

    name: str
    """What was checked."""
    status: str
    """``"ok"``, ``"fail"`` or ``"skipped"`` (an earlier check failed)."""
    detail: str
    """What was found (never a secret)."""
    fix: str = ""
    """What to do, when it failed."""

    @property
    def ok(self) -> bool:
        """True unless the check failed."""
        return self.status != "fail"


class _Report:
    """The checklist: every name reported once, in order; finish() marks the rest not run."""

    def __init__(self, names: tuple[str, ...], on_check: Callable[[Check], None] | None) -> None:
        self.names = names
        self.checks: list[Check] = []
        self.blocked = False
        self.on_check = on_check

    def _add(self, check: Check) -> None:
        assert check.name in self.names and check.name not in {c.name for c in self.checks}
        self.checks.append(check)
        if self.on_check is not None:
            self.on_check(check)

    def ok(self, name: str, detail: str) -> None:
        self._add(Check(name, "ok", detail))

    def fail(self, name: str, detail: str, fix: str) -> None:
        self._add(Check(name, "fail", detail, fix))
        self.blocked = True

    def finish(self) -> list[Check]:
        done = {check.name for check in self.checks}
        for name in self.names:
            if name not in done:
                self._add(Check(name, "skipped", "not run: an earlier check failed"))
        return self.checks


OFFLINE = (
    "variables loaded",
    "no stray whitespace",
    "key and merchant format",
    "environment matches key",
    "HTTPS",
)
ONLINE = ("host reachable", "TLS valid", "token obtained", "second call cached", "store reachable")
RENEWAL = "token renewed"
CHECKLIST = (*OFFLINE, *ONLINE, RENEWAL)
"""The name of every check, in order (``token renewed`` is run only with ``full``)."""


def run_doctor(
    environ: Mapping[str, str],
    *,
    full: bool = False,
    ca_bundle: str | None = None,
    allow_http_loopback: bool = False,
    timeout: float = 10.0,
    on_check: Callable[[Check], None] | None = None,
) -> list[Check]:
    """Run the checks against ``environ`` (normally ``os.environ``); every check, in order.

    The list always holds each check of the checklist once (``token renewed`` only with
    ``full``); those after a failure that depend on it are ``"skipped"``. ``timeout`` is in
    seconds, for the TCP connection and the TLS handshake. ``on_check``, when given, is
    called with each check as soon as it has its verdict, in the list's order (the
    command line prints each row then: ``token renewed`` alone waits about 50 s). Raises
    nothing for a bad setup: that is what the checks report.
    """
    report = _Report(OFFLINE + ONLINE + ((RENEWAL,) if full else ()), on_check)
    raw_key = environ.get(API_KEY_VARIABLE)
    raw_merchant = environ.get(MERCHANT_ID_VARIABLE)
    raw_url = environ.get(BASE_URL_VARIABLE)

    missing = [
        n for n, v in ((API_KEY_VARIABLE, raw_key), (MERCHANT_ID_VARIABLE, raw_merchant)) if not v
    ]
    if missing:
        report.fail(
            "variables loaded",
            f"{', '.join(missing)} not set",
            "Export the API key and merchant id from the 88Pay dashboard (a .env file "
            "is only read if your process loads it).",
        )
        return report.finish()
    assert raw_key is not None and raw_merchant is not None
    try:  # what from_env() refuses, the application would meet too
        config = read_environment(environ)
    except EightyEightPayError as error:
        report.fail(
            "variables loaded",
            str(error),
            "Fix the variable named (or unset it for the default), as from_env() would refuse it.",
        )
        return report.finish()
    report.ok(
        "variables loaded",
        f"{API_KEY_VARIABLE}, {MERCHANT_ID_VARIABLE}"
        + (f", {BASE_URL_VARIABLE}" if raw_url else " (base URL from the key's prefix)"),
    )

    spaced = [
        n
        for n, v in (
            (API_KEY_VARIABLE, raw_key),
            (MERCHANT_ID_VARIABLE, raw_merchant),
            (BASE_URL_VARIABLE, raw_url),
        )
        if v is not None and v != v.strip()
    ]
    if spaced:
        report.fail(
            "no stray whitespace",
            f"{', '.join(spaced)} has leading or trailing whitespace",
            "Remove the spaces or newline (often a copy-paste or .env artefact); 88Pay "
            "compares values exactly and answers 401 otherwise.",
        )
    else:
        report.ok("no stray whitespace", "none")
    key, merchant = raw_key.strip(), raw_merchant.strip()
    url = (raw_url or "").strip() or (PRODUCTION_URL if key.startswith("sk_live_") else SANDBOX_URL)

    try:
        Credentials(key, merchant, SANDBOX_URL if key.startswith("sk_test_") else PRODUCTION_URL)
    except EightyEightPayError as error:
        report.fail(
            "key and merchant format",
            str(error),
            "Keys look like sk_test_… (sandbox) or sk_live_… (production); merchant ids "
            "like MCH-COL-TEST-12345. Copy both again from the dashboard.",
        )
    else:
        report.ok(
            "key and merchant format",
            f"{'sandbox' if key.startswith('sk_test_') else 'live'} key, {merchant}",
        )

    environment = environment_of(url)
    live = key.startswith("sk_live_")
    if environment is Environment.SANDBOX and live:
        report.fail(
            "environment matches key",
            "a live key (sk_live_) against the sandbox host",
            f"Use your sk_test_ key with {SANDBOX_URL}, or set {BASE_URL_VARIABLE}="
            f"{PRODUCTION_URL}.",
        )
    elif environment is Environment.PRODUCTION and not live:
        report.fail(
            "environment matches key",
            "a sandbox key (sk_test_) against the production host",
            f"Use your sk_live_ key with {PRODUCTION_URL}, or set {BASE_URL_VARIABLE}="
            f"{SANDBOX_URL}.",
        )
    else:
        names = {v: k for k, v in ENVIRONMENTS.items()}
        if url in names:
            report.ok("environment matches key", names[url])
        elif has_userinfo(url) or base_url_problem(url):  # the HTTPS row says what is wrong
            report.ok("environment matches key", "custom host (see the HTTPS row)")
        else:
            report.ok("environment matches key", f"custom host {urlsplit(url).netloc}")

    _https(report, url, allow_http_loopback)
    if report.blocked:
        return report.finish()
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)

    # A bad bundle fails the TLS row whether or not the host answers: no network is needed
    # to know it.
    trust_problem = ca_bundle_problem(ca_bundle) if ca_bundle else None
    trust_fix = f"{CA_BUNDLE_FIX[0].upper()}{CA_BUNDLE_FIX[1:]}."
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as error:
        report.fail(
            "host reachable",
            f"{host}:{port}: {type(error).__name__}",
            "Check the base URL, DNS, proxies and firewalls (88Pay may also need your "
            "egress IP on the merchant's allow-list).",
        )
        if trust_problem is not None:
            report.fail("TLS valid", f"--ca-bundle {trust_problem}", trust_fix)
        return report.finish()
    with sock:
        report.ok("host reachable", f"{host}:{port}")
        if trust_problem is not None:
            report.fail("TLS valid", f"--ca-bundle {trust_problem}", trust_fix)
        elif parts.scheme == "https":
            _handshake(report, sock, host, ca_bundle, environ.get("SSL_CERT_FILE"))
        else:
            report.ok("TLS valid", "plain HTTP to a loopback emulator (no TLS)")
    if report.blocked:
        return report.finish()

    store_name = environ.get(STORE_VARIABLE, "").strip() or "memory"
    options: dict[str, Any] = {
        "base_url": url,
        "ca_bundle": ca_bundle,
        # the store the token and request commands use: EIGHTY_EIGHT_PAY_STORE, if set
        "store": store_name if store_name != "memory" else MemoryStore(),
        "allow_http_loopback": allow_http_loopback,
    }
    config.apply(options)  # the API limits, as from_env() reads them
    try:
        manager = TokenManager(key, merchant, **options)
    except EightyEightPayError as error:
        fix = _fix_for(error)
        if isinstance(error, ConfigurationError) and environ.get(STORE_VARIABLE):
            try:
                registry().store(store_name)
            except ConfigurationError:  # no store of that name
                fix = (
                    f"Set {STORE_VARIABLE} to a store's registered name (memory, redis, "
                    "memcached or an installed plugin's), or unset it."
                )
            else:  # the store is there; its own settings are wrong
                fix = (
                    f"Fix the {store_name} store's own settings as the message says "
                    "(EIGHTY_EIGHT_PAY_REDIS_URL, EIGHTY_EIGHT_PAY_MEMCACHED or the plugin's)."
                )
        report.fail("token obtained", _said(error), fix)
        return report.finish()
    with manager:
        try:
            token = manager.get_token()
        except EightyEightPayError as error:
            report.fail("token obtained", _said(error), _fix_for(error))
            return report.finish()
        life = token.remaining(manager.clock())
        before = manager.stats().token_requests
        source = "requested from 88Pay" if before else f"from the {store_name} store, not requested"
        report.ok("token obtained", f"token {token.fingerprint}, expires in {life:.0f} s; {source}")
        again = manager.get_token()
        stats = manager.stats()
        if again == token and stats.token_requests == before:
            report.ok(
                "second call cached", f"served from the cache, no request sent; {stats.summary()}"
            )
        else:
            report.fail(
                "second call cached",
                "a second token request was sent",
                "Share one manager per process (and a fleet store across processes).",
            )
        _store(report, manager, store_name)
        if full and not report.blocked:
            _renewal(report, manager, token)
    return report.finish()


def _store(report: _Report, manager: TokenManager, store_name: str) -> None:
    """Whether the fleet store answered the token's refresh (its calls never raise)."""
    health = manager._fleet_store.health if manager._fleet_store is not None else None
    if health is None:
        report.ok("store reachable", f"{store_name} store (this process only, nothing shared)")
    elif health.healthy and manager.stats().store_mode == "healthy":
        report.ok("store reachable", f"{store_name} store answered; the fleet shares the token")
    elif health.fix:
        report.fail(
            "store reachable",
            f"the {store_name} store refused this configuration ({health.detail})",
            f"{health.fix[0].upper()}{health.fix[1:]}.",
        )
    else:
        report.fail(
            "store reachable",
            f"the {store_name} store did not answer ({health.detail or 'unknown'}); the token "
            "was requested alone",
            "Check that the store runs and that its URL's host and port reach it "
            "(EIGHTY_EIGHT_PAY_REDIS_URL, EIGHTY_EIGHT_PAY_MEMCACHED). Until it answers, each "
            "process keeps to a share of the rate limits.",
        )


def _said(error: EightyEightPayError) -> str:
    return f"{type(error).__name__}: {cli_message(error)}"


def _https(report: _Report, url: str, allow_http_loopback: bool) -> None:
    """HTTPS, or plain HTTP to a loopback emulator with --allow-http-loopback: as the library."""
    if has_userinfo(url):  # refused first, as the library does: no row may show the URL
        report.fail(
            "HTTPS",
            "the base URL holds a user name or password (not shown)",
            f"Set {BASE_URL_VARIABLE} to the scheme and host (and port) only: 88Pay "
            "authenticates with the API key and merchant id, never with the URL.",
        )
        return
    problem = base_url_problem(url)
    if problem is not None:
        report.fail(
            "HTTPS",
            problem,
            f"Set {BASE_URL_VARIABLE} to {PRODUCTION_URL} or {SANDBOX_URL}, or unset it (the "
            "key's prefix then picks one).",
        )
        return
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme == "https":
        report.ok("HTTPS", f"https to {host}")
    elif _is_loopback(host):
        if allow_http_loopback:
            report.ok("HTTPS", f"plain HTTP to {host}, a loopback emulator (--allow-http-loopback)")
        else:
            report.fail(
                "HTTPS",
                f"{url} is plain HTTP",
                "88Pay requires HTTPS. For a local emulator on loopback only, pass "
                "--allow-http-loopback.",
            )
    else:
        report.fail(
            "HTTPS",
            f"plain HTTP to {host}, which is not a loopback address",
            f"88Pay requires HTTPS: set {BASE_URL_VARIABLE} to an https:// URL. "
            "--allow-http-loopback permits plain HTTP only to a loopback emulator "
            "(127.0.0.1, ::1, localhost).",
        )


def _handshake(
    report: _Report, sock: socket.socket, host: str, ca_bundle: str | None, cert_file: str | None
) -> None:
    try:
        with tls_context(ca_bundle).wrap_socket(sock, server_hostname=host) as tls:
            report.ok("TLS valid", f"{tls.version()}, certificate verified for {host}")
    except OSError as error:
        reason = tls_failure(error)
        if reason is None:
            report.fail(
                "TLS valid",
                f"the TLS handshake broke off ({type(error).__name__})",
                "Check that the base URL's port serves HTTPS and that no proxy or firewall "
                "cuts the connection.",
            )
        else:
            # OpenSSL skips an SSL_CERT_FILE it cannot load without a word; say so here.
            problem = None if ca_bundle or not cert_file else ca_bundle_problem(cert_file)
            report.fail(
                "TLS valid",
                f"verification failed: {reason}"
                + (f"; SSL_CERT_FILE={problem}" if problem else ""),
                "Check the system clock, the CA bundle (--ca-bundle or SSL_CERT_FILE) and that "
                "the URL's host matches the certificate. Never turn verification off.",
            )


def _renewal(report: _Report, manager: TokenManager, token: object) -> None:
    """Wait for the token to go stale and check that a new one replaces it."""
    first = manager.get_token()
    wait = max(0.0, first.fresh_until - manager.clock()) + 0.05
    time.sleep(wait)
    deadline = manager.clock() + (first.usable_until - first.fresh_until) + 5
    while manager.clock() < deadline:
        current = manager.get_token()
        if current != first:
            report.ok("token renewed", f"token {current.fingerprint} replaced the expiring one")
            return
        time.sleep(0.05)
    report.fail(
        "token renewed",
        "no new token before the old one became unusable",
        "Check the network path and 88Pay's status; the rate limit may be spent.",
    )


def _fix_for(error: EightyEightPayError) -> str:
    if isinstance(error, InvalidCredentials):
        return (
            "88Pay rejected the key or merchant id: check both in the dashboard, that the "
            "key was not revoked, and that a sandbox key goes to the sandbox."
        )
    if isinstance(error, AccessDenied):
        return (
            "The merchant's KYC may be pending, the account suspended, or this host's IP "
            "not allow-listed: contact 88Pay support or update the allow-list."
        )
    if isinstance(error, RateLimited):
        return (
            f"Wait {error.retry_after:.0f} s. Token requests are limited to 10 a minute and "
            f"100 an hour per merchant. Without {STORE_VARIABLE} each token, request and "
            "doctor command requests its own; with it (e.g. redis and "
            "EIGHTY_EIGHT_PAY_REDIS_URL) they share one token with each other and your "
            "application."
        )
    if isinstance(error, TLSError):
        return "Fix TLS trust (CA bundle, clock, host name)."
    return "See the message; retry later if 88Pay or the network is having trouble."
