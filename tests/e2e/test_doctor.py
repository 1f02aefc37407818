"""`eightyeightpay doctor` names what is wrong and how to fix it."""

from __future__ import annotations

import pytest

from eightyeightpay.adapters.doctor import Check, run_doctor
from eightyeightpay.plugins import redis_store
from eightyeightpay.plugins.sandbox import (
    DEFAULT_API_KEY,
    DEFAULT_MERCHANT_ID,
    SUSPENDED_API_KEY,
    SUSPENDED_MERCHANT_ID,
    Sandbox,
    SandboxServer,
)
from tests.servers import RedisServer


def env(key: str, merchant: str, url: str | None) -> dict[str, str]:
    values = {"EIGHTY_EIGHT_PAY_API_KEY": key, "EIGHTY_EIGHT_PAY_MERCHANT_ID": merchant}
    if url is not None:
        values["EIGHTY_EIGHT_PAY_BASE_URL"] = url
    return values


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {check.name: check for check in checks}


def ca(server: SandboxServer) -> str:
    assert server.certificates is not None
    return str(server.certificates.ca_file)


def test_a_healthy_setup_passes_every_check_including_renewal() -> None:
    with SandboxServer(Sandbox(token_lifetime=3), tls=True) as server:
        checks = run_doctor(
            env(DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, server.url), full=True, ca_bundle=ca(server)
        )
    assert [c.status for c in checks] == ["ok"] * len(checks), checks
    assert {"token obtained", "second call cached", "token renewed", "TLS valid"} <= set(
        by_name(checks)
    )
    assert "1 token request (1 ok), 1/10 this minute, 1/100 this hour" in (
        by_name(checks)["second call cached"].detail
    )


def test_a_live_key_against_the_sandbox_names_the_mismatch() -> None:
    checks = by_name(
        run_doctor(
            env("sk_live_abcdefgh12345678", DEFAULT_MERCHANT_ID, "https://api-sandbox.88pay.io")
        )
    )
    check = checks["environment matches key"]
    assert check.status == "fail" and "live key" in check.detail and "sk_test_" in check.fix
    assert checks["token obtained"].status == "skipped"  # nothing was sent


def test_a_trailing_space_in_the_key_is_named() -> None:
    with SandboxServer(Sandbox(), tls=True) as server:
        checks = by_name(
            run_doctor(
                env(DEFAULT_API_KEY + " ", DEFAULT_MERCHANT_ID, server.url), ca_bundle=ca(server)
            )
        )
    check = checks["no stray whitespace"]
    assert check.status == "fail" and "EIGHTY_EIGHT_PAY_API_KEY" in check.detail
    assert "whitespace" in check.detail and "Remove" in check.fix
    assert DEFAULT_API_KEY not in repr(checks)


def test_the_suspended_account_names_the_documented_causes_of_403() -> None:
    with SandboxServer(Sandbox(), tls=True) as server:
        checks = by_name(
            run_doctor(
                env(SUSPENDED_API_KEY, SUSPENDED_MERCHANT_ID, server.url), ca_bundle=ca(server)
            )
        )
    check = checks["token obtained"]
    assert check.status == "fail" and "AccessDenied" in check.detail
    for cause in ("KYC", "suspended", "allow-list"):
        assert cause in check.fix


def test_untrusted_tls_and_unreachable_hosts_are_named() -> None:
    with SandboxServer(Sandbox(), tls=True) as server:
        tls = by_name(run_doctor(env(DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, server.url)))
        port = server.port
    assert tls["TLS valid"].status == "fail" and "CA bundle" in tls["TLS valid"].fix
    gone = by_name(
        run_doctor(env(DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, f"https://127.0.0.1:{port}"))
    )
    assert gone["host reachable"].status == "fail"
    assert gone["token obtained"].status == "skipped"


@pytest.mark.parametrize("missing", ["EIGHTY_EIGHT_PAY_API_KEY", "EIGHTY_EIGHT_PAY_MERCHANT_ID"])
def test_missing_variables_are_named(missing: str) -> None:
    values = env(DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, None)
    del values[missing]
    checks = run_doctor(values)
    assert checks[0].status == "fail" and missing in checks[0].detail


CHECKLIST = [
    "variables loaded",
    "no stray whitespace",
    "key and merchant format",
    "environment matches key",
    "HTTPS",
    "host reachable",
    "TLS valid",
    "token obtained",
    "second call cached",
    "store reachable",
]


@pytest.mark.parametrize(
    ("values", "loopback", "failed"),
    [
        ({}, False, "variables loaded"),
        (env("sk_test_x", DEFAULT_MERCHANT_ID, None), False, "key and merchant format"),
        (env(DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, "http://example.com"), False, "HTTPS"),
        (env(DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, "http://example.com"), True, "HTTPS"),
        (env(DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, "https://127.0.0.1:port"), False, "HTTPS"),
        (env(DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, "https://127.0.0.1:1"), False, "host reachable"),
        (env(DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, "https://api..88pay.io"), False, "HTTPS"),
        (env(DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, "https://[::1"), False, "HTTPS"),
        (env(DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, "https://h/?key=k"), False, "HTTPS"),
        (
            env(DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, None)
            | {"EIGHTY_EIGHT_PAY_API_PER_MINUTE": "abc"},
            False,
            "variables loaded",
        ),
    ],
)
@pytest.mark.parametrize("full", [False, True])
def test_the_whole_checklist_is_returned_once_whatever_fails(
    values: dict[str, str], loopback: bool, failed: str, full: bool
) -> None:
    checks = run_doctor(values, full=full, allow_http_loopback=loopback)
    names = CHECKLIST + (["token renewed"] if full else [])
    assert [check.name for check in checks] == names
    first = next(check for check in checks if check.status == "fail")
    assert first.name == failed and first.fix
    # the offline checks all run; nothing online runs after a failure
    after = checks[max(names.index(failed) + 1, names.index("host reachable")) :]
    assert after and all(check.status != "ok" for check in after), checks


def test_a_bad_ca_bundle_fails_the_tls_row_even_for_a_loopback_emulator() -> None:
    with SandboxServer(Sandbox()) as server:
        checks = by_name(
            run_doctor(
                env(DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, server.url),
                ca_bundle="/nonexistent.pem",
                allow_http_loopback=True,
            )
        )
    assert checks["HTTPS"].status == "ok" and checks["host reachable"].status == "ok"
    assert checks["TLS valid"].status == "fail" and "--ca-bundle" in checks["TLS valid"].fix
    assert checks["token obtained"].status == "skipped"


def test_an_ssl_cert_file_that_cannot_be_loaded_is_named_when_tls_fails() -> None:
    with SandboxServer(Sandbox(), tls=True) as server:
        values = env(DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, server.url)
        check = by_name(run_doctor({**values, "SSL_CERT_FILE": "/nonexistent.pem"}))["TLS valid"]
    assert check.status == "fail"
    assert check.detail.endswith("; SSL_CERT_FILE=/nonexistent.pem does not exist"), check.detail


@pytest.mark.parametrize(
    ("path", "detail", "fix"),
    [
        (None, "did not answer (ConnectionError)", "Check that the store runs"),
        ("/99", "refused this configuration (ResponseError)", "/N"),
        (
            "/0?ssl_ca_certs=/nonexistent-ca.pem",
            "refused this configuration (TypeError)",
            "rediss://",
        ),
    ],
    ids=["unreachable", "no-such-db", "tls-option-on-redis-url"],
)
def test_a_failing_fleet_store_fails_its_row(
    redis_server: RedisServer,
    monkeypatch: pytest.MonkeyPatch,
    path: str | None,
    detail: str,
    fix: str,
) -> None:
    """The token is still obtained (alone, within a share of the limits): only the store's
    row fails, and with it the command's exit code."""
    url = "redis://127.0.0.1:1/9" if path is None else redis_server.url.removesuffix("/0") + path
    monkeypatch.setenv("EIGHTY_EIGHT_PAY_REDIS_URL", url)  # the store reads the process's
    monkeypatch.setattr(redis_store, "_process_stores", {})  # and is built once per process
    with SandboxServer(Sandbox(), tls=True) as server:
        values = env(DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, server.url)
        values |= {"EIGHTY_EIGHT_PAY_STORE": "redis"}
        checks = run_doctor(values, ca_bundle=ca(server))
    assert [c.name for c in checks] == CHECKLIST
    failed = [c for c in checks if c.status == "fail"]
    assert [c.name for c in failed] == ["store reachable"], checks
    assert detail in failed[0].detail and fix in failed[0].fix
    assert "nonexistent-ca" not in failed[0].detail + failed[0].fix  # no value of the URL


def test_a_healthy_fleet_store_passes_its_row(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EIGHTY_EIGHT_PAY_REDIS_URL", redis_server.url)
    monkeypatch.setattr(redis_store, "_process_stores", {})
    with SandboxServer(Sandbox(), tls=True) as server:
        values = env(DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, server.url)
        values |= {
            "EIGHTY_EIGHT_PAY_STORE": "redis",
            "EIGHTY_EIGHT_PAY_REDIS_URL": redis_server.url,
        }
        checks = by_name(run_doctor(values, ca_bundle=ca(server)))
    assert checks["store reachable"].status == "ok", checks["store reachable"]
    assert "redis store answered" in checks["store reachable"].detail


def test_a_secret_in_a_mistyped_setting_is_on_no_row() -> None:
    key, password = "sk_live_9f8e7d6c5b4a3f2e1d0c", "s3cr3t-proxy-pass"
    for values in (
        env(key, key, None),  # the key given twice
        env(DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, f"https//user:{password}@api.88pay.io"),
        env(DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, f"https://api.88pay.io:{password}"),
    ):
        checks = run_doctor(values)
        assert any(check.status == "fail" for check in checks)
        shown = repr(checks)
        assert key not in shown and password not in shown, shown


def test_the_api_limits_from_the_environment_govern_the_doctors_manager() -> None:
    with SandboxServer(tls=True) as server:
        values = env(DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, server.url)
        checks = by_name(
            run_doctor(values | {"EIGHTY_EIGHT_PAY_API_PER_MINUTE": "7"}, ca_bundle=ca(server))
        )
    assert checks["second call cached"].status == "ok"
    assert "API calls 0/7 this minute" in checks["second call cached"].detail, checks


@pytest.mark.parametrize(
    ("store", "extra", "fix"),
    [
        ("nosuch", {}, "registered name"),
        ("redis", {"EIGHTY_EIGHT_PAY_REDIS_URL": "http://127.0.0.1:6379"}, "redis store's own"),
    ],
)
def test_a_store_setting_that_cannot_work_gets_the_fix_for_its_own_mistake(
    store: str, extra: dict[str, str], fix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in extra.items():  # the stores read their own variables themselves
        monkeypatch.setenv(name, value)
    with SandboxServer(tls=True) as server:
        values = env(DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, server.url)
        checks = by_name(
            run_doctor(values | {"EIGHTY_EIGHT_PAY_STORE": store}, ca_bundle=ca(server))
        )
    check = checks["token obtained"]
    assert check.status == "fail" and fix in check.fix, check
