from __future__ import annotations

import pytest

from eightyeightpay import (
    PRODUCTION_URL,
    SANDBOX_URL,
    ConfigurationError,
    Credentials,
    EnvironmentMismatch,
    InsecureTransport,
    InvalidPolicy,
    MalformedCredentials,
    Policy,
)
from eightyeightpay.adapters.config import build_credentials, read_environment
from eightyeightpay.governor import RateWindow
from tests.support import API_KEY, MERCHANT


def test_valid_credentials_mask_the_key_everywhere() -> None:
    creds = Credentials(API_KEY, MERCHANT)
    for text in (repr(creds), str(creds), repr(creds.cache_key), str(creds.cache_key)):
        assert API_KEY not in text
    assert creds.masked_key == "sk_test_…5b4a"
    assert creds.base_url == SANDBOX_URL


@pytest.mark.parametrize(
    ("key", "merchant", "fragment"),
    [
        (API_KEY + " ", MERCHANT, "whitespace"),
        (" " + API_KEY, MERCHANT, "whitespace"),
        (API_KEY, MERCHANT + "\n", "whitespace"),
        ("pk_test_abcdefgh", MERCHANT, "sk_test_"),
        ("sk_test_ab cdefgh", MERCHANT, "sk_test_"),
        ("", MERCHANT, "empty"),
        (API_KEY, "COL-TEST-12345", "MCH-{COUNTRY}-{ID}"),
        (API_KEY, "MCH-CO-1", "MCH-{COUNTRY}-{ID}"),
    ],
)
def test_malformed_credentials_are_refused_before_any_request(
    key: str, merchant: str, fragment: str
) -> None:
    with pytest.raises(MalformedCredentials) as caught:
        Credentials(key, merchant)
    assert fragment in str(caught.value)
    if len(key.strip()) > 10:
        assert key.strip() not in str(caught.value)


def test_live_key_against_sandbox_and_test_key_against_production_are_refused() -> None:
    with pytest.raises(EnvironmentMismatch, match="live key"):
        Credentials("sk_live_abcdef123456", MERCHANT, SANDBOX_URL)
    with pytest.raises(EnvironmentMismatch, match="sandbox key"):
        Credentials(API_KEY, MERCHANT, PRODUCTION_URL)


def test_plain_http_only_to_loopback_and_only_when_asked() -> None:
    with pytest.raises(InsecureTransport):
        Credentials(API_KEY, MERCHANT, "http://127.0.0.1:8080")
    with pytest.raises(InsecureTransport):
        Credentials(API_KEY, MERCHANT, "http://example.com", allow_http_loopback=True)
    creds = Credentials(API_KEY, MERCHANT, "http://127.0.0.1:8080/", allow_http_loopback=True)
    assert creds.base_url == "http://127.0.0.1:8080"


@pytest.mark.parametrize("url", ["https://127.0.0.1:port", "https://127.0.0.1:70000", "https://:1"])
def test_a_base_url_without_a_host_or_with_a_bad_port_is_refused_when_built(url: str) -> None:
    # not at the first request, as a TransportError "failed unexpectedly (ValueError)"
    with pytest.raises(InsecureTransport, match="not an https:// URL with a host"):
        Credentials(API_KEY, MERCHANT, url)


def test_a_secret_in_the_merchant_slot_or_a_mistyped_base_url_is_never_quoted() -> None:
    live_key, password = "sk_live_9f8e7d6c5b4a3f2e1d0c", "s3cr3t-proxy-pass"
    with pytest.raises(MalformedCredentials, match="looks like it holds an API key") as caught:
        Credentials(live_key, live_key, PRODUCTION_URL)  # the key given twice
    assert live_key not in str(caught.value) and "sk_live_9" not in repr(caught.value)
    with pytest.raises(MalformedCredentials, match=r"\(16 characters; not shown\)"):
        Credentials(API_KEY, "hunter2:Tr0ub4dr")
    with pytest.raises(MalformedCredentials, match="'MCH-COL'"):  # meant as one: shown
        Credentials(API_KEY, "MCH-COL")
    for run_together in ("MCH-" + live_key, "MCH-COL-TEST-12345" + live_key):
        with pytest.raises(MalformedCredentials, match="holds an API key") as caught:
            Credentials(live_key, run_together, PRODUCTION_URL)
        assert live_key not in str(caught.value)
    for url in (
        f"https//user:{password}@api.88pay.io",
        f"user:{password}@api.88pay.io",
        f"https://api.88pay.io:{password}",
        f"https://user:{password}@[::1",
    ):
        with pytest.raises(ConfigurationError) as refused:
            Credentials(API_KEY, MERCHANT, url)
        assert password not in str(refused.value), url
    with pytest.raises(InsecureTransport, match=r"'ftp://example\.com'"):  # nothing to hide
        Credentials(API_KEY, MERCHANT, "ftp://example.com")


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("https://api..88pay.io", "not a valid host name"),
        (f"https://{'a' * 64}.88pay.io", "not a valid host name"),
        ("https://api-sandbox.88pay.io/?key=hunter2", "has a query"),
        ("https://api-sandbox.88pay.io/#frag", "has a query"),
        ("https://[::1", "not an https:// URL with a host"),
        ("https://ho st", "space or a control character"),
        ("https://ho\tst", "space or a control character"),
        ("https://ho\u200bst.com", "space or a control character"),
        ("https://\ufb01le.com", "not a valid host name"),  # a ligature nameprep rewrites
        ("https://api.88pay.io;x", "not a valid host name"),
        ("https://-bad-.com", "not a valid host name"),
        ("https://ex%41mple.com", "not a valid host name"),
        ("https://999.1.1.1", "not a valid host name"),
        ("https://1.2.3.4.5", "not a valid host name"),
        ("https://[zz::1]", "not an https:// URL with a host"),
        ("https://[v1.api.88pay.io]", "not a valid host name"),  # not dropped to a name
        ("https://[fe80::1%25]", "not a valid host name"),  # an empty zone
        ("https://xn--zz.com", "not a valid host name"),  # punycode that does not decode
        ("https://0x7f.1", "not a valid host name"),  # inet_aton would make it 127.0.0.1
        ("https://api.88pay.io/v1 ?key=hunter2", "space or a control character"),
    ],
)
def test_a_base_url_that_would_misroute_every_request_is_refused_when_built(
    url: str, said: str
) -> None:
    # not at the first request (a raw UnicodeError, or a token request to '/?key=…/api/…')
    with pytest.raises(InsecureTransport, match=said) as caught:
        Credentials(API_KEY, MERCHANT, url)
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize(
    "url",
    [
        "https://API-Sandbox.88pay.io/",
        "https://b\u00fccher.de",
        "https://xn--bcher-kva.de",
        "https://example.com.",
        "https://[::1]:8443",
        "https://[fe80::1%25eth0]:8443",
        "https://127.0.0.1:1",
        "https://localhost:65535",
        "https://proxy.internal/v1",
        "https://payments_emulator:8443",
    ],
)
def test_every_kind_of_host_a_base_url_may_name_is_accepted(url: str) -> None:
    assert Credentials(API_KEY, MERCHANT, url).base_url


@pytest.mark.parametrize("tail", ["/?", "/#", "?", "/"])
def test_an_empty_query_or_fragment_is_dropped_with_the_slash_before_it(tail: str) -> None:
    credentials = Credentials(API_KEY, MERCHANT, "https://api-sandbox.88pay.io" + tail)
    assert credentials.base_url == SANDBOX_URL  # one cache key; no '//' before each path


def test_an_api_limit_variable_must_be_a_few_ascii_digits() -> None:
    base = {"EIGHTY_EIGHT_PAY_API_KEY": API_KEY, "EIGHTY_EIGHT_PAY_MERCHANT_ID": MERCHANT}
    for text in ("9" * 5000, "\u00b2", "abc", "0", "-1"):
        with pytest.raises(ConfigurationError, match="API_PER_MINUTE must be a whole number"):
            read_environment(base | {"EIGHTY_EIGHT_PAY_API_PER_MINUTE": text})
    config = read_environment(base | {"EIGHTY_EIGHT_PAY_API_PER_MINUTE": " 120 "})
    assert config.api_limits == {"api_per_minute": 120}


def test_environment_is_inferred_from_the_key_when_not_given() -> None:
    assert build_credentials("sk_live_abcdef123456", MERCHANT).base_url == PRODUCTION_URL
    assert build_credentials(API_KEY, MERCHANT).base_url == SANDBOX_URL
    assert build_credentials(API_KEY, MERCHANT, environment="sandbox").base_url == SANDBOX_URL


def test_rotated_key_or_other_host_never_shares_a_cache_key() -> None:
    a = Credentials(API_KEY, MERCHANT).cache_key
    assert a != Credentials(API_KEY + "x", MERCHANT).cache_key
    assert a != Credentials(API_KEY, MERCHANT, "https://127.0.0.1:9").cache_key
    assert API_KEY not in str(a)


@pytest.mark.parametrize(
    "spelling",
    [
        SANDBOX_URL.upper().replace("HTTPS://", "https://"),
        SANDBOX_URL + ":443",
        SANDBOX_URL + ":443/",
        " HTTPS" + SANDBOX_URL[5:] + " ",
    ],
)
def test_one_api_host_spelled_differently_shares_one_cache_key(spelling: str) -> None:
    """One host, one token cache and one pair of budgets: case, a default port and a
    trailing slash are spelling, not another host."""
    assert Credentials(API_KEY, MERCHANT, spelling).base_url == SANDBOX_URL
    assert (
        Credentials(API_KEY, MERCHANT, spelling).cache_key
        == Credentials(API_KEY, MERCHANT).cache_key
    )
    other_port = Credentials(API_KEY, MERCHANT, SANDBOX_URL + ":8443")
    assert other_port.base_url == SANDBOX_URL + ":8443"
    assert other_port.cache_key != Credentials(API_KEY, MERCHANT).cache_key


def test_environment_variables_are_read_and_trimmed() -> None:
    config = read_environment(
        {
            "EIGHTY_EIGHT_PAY_API_KEY": f" {API_KEY}\n",
            "EIGHTY_EIGHT_PAY_MERCHANT_ID": MERCHANT,
        }
    )
    assert config.api_key == API_KEY
    assert config.trimmed == ("EIGHTY_EIGHT_PAY_API_KEY",)
    assert API_KEY not in repr(config)
    with pytest.raises(MalformedCredentials, match="EIGHTY_EIGHT_PAY_MERCHANT_ID"):
        read_environment({"EIGHTY_EIGHT_PAY_API_KEY": API_KEY})


def test_default_policy_costs_at_most_74_requests_an_hour() -> None:
    policy = Policy()
    assert policy.margin == 10
    assert 0 < policy.lead < 5
    assert policy.steady_hourly_cost <= 74.0 + 1e-9


@pytest.mark.parametrize(
    "options",
    [
        {"margin": 55, "lead": 10},
        {"margin": 10, "lead": 20},  # 30 s period: 120 an hour
        {"margin": -1},
        {"per_minute": 0},
        {"backoff_cap": 0.5},
        {"margin": float("nan")},
    ],
)
def test_policies_that_cannot_work_are_refused(options: dict[str, float]) -> None:
    with pytest.raises(InvalidPolicy):
        Policy(**options)  # type: ignore[arg-type]


@pytest.mark.parametrize("policy", [{"api_per_minute": 120}, {}, 60, "strict"])
def test_a_policy_that_is_not_a_policy_is_refused_when_the_manager_is_built(
    policy: object,
) -> None:
    from eightyeightpay import MemoryStore, TokenManager

    with pytest.raises(ConfigurationError, match=r"policy= must be an eightyeightpay\.Policy"):
        TokenManager(API_KEY, MERCHANT, policy=policy, store=MemoryStore())  # type: ignore[arg-type]
    environ = {
        "EIGHTY_EIGHT_PAY_API_KEY": API_KEY,
        "EIGHTY_EIGHT_PAY_MERCHANT_ID": MERCHANT,
        "EIGHTY_EIGHT_PAY_API_PER_MINUTE": "120",
    }
    with pytest.raises(ConfigurationError, match=r"policy= must be an eightyeightpay\.Policy"):
        TokenManager.from_env(environ, policy=policy, store=MemoryStore())


def test_short_lived_tokens_get_proportional_windows() -> None:
    policy = Policy()
    margin, lead = policy.windows_for(6)
    assert margin == pytest.approx(1.0)
    assert lead == pytest.approx(policy.lead / 10)
    assert policy.windows_for(120) == (policy.margin, policy.lead)


def test_a_compressed_policy_divides_every_window_by_one_factor() -> None:
    policy = Policy()
    fast = policy.compressed(10)
    assert fast.expected_lifetime == pytest.approx(6.0)
    assert fast.margin == pytest.approx(1.0)
    assert fast.lead == pytest.approx(policy.lead / 10)
    assert (fast.minute_span, fast.hour_span) == pytest.approx((6.0, 360.0))
    assert (fast.per_minute, fast.per_hour) == (10, 100)
    assert fast.refresh_period == pytest.approx(policy.refresh_period / 10)
    assert (fast.backoff_initial, fast.deadline) == (policy.backoff_initial, policy.deadline)
    for factor in (0, -1, float("nan"), float("inf"), True, "10"):
        with pytest.raises(InvalidPolicy):
            policy.compressed(factor)  # type: ignore[arg-type]
    assert policy.compressed(60).expected_lifetime == pytest.approx(1.0)  # the shortest life
    for factor in (61, 1e9):  # tokens shorter than a round trip: meaningless
        with pytest.raises(InvalidPolicy, match="at most 60") as caught:
            policy.compressed(factor)
        assert isinstance(caught.value, ConfigurationError)


def test_a_compressed_policy_is_refused_when_its_windows_do_not_fit() -> None:
    with pytest.raises(InvalidPolicy, match="per 360 s"):
        # One request every 0.2 s: 1800 per 360 s.
        Policy(expected_lifetime=6.0, margin=1.0, lead=4.8, minute_span=6.0, hour_span=360.0)
    with pytest.raises(InvalidPolicy):
        Policy(minute_span=0.0)


def test_the_governor_keeps_the_compressed_windows() -> None:
    window = RateWindow()
    for t in range(10):
        window = window.record(t * 0.1, 360.0)
    assert window.next_allowed(0.95, 10, 100, 6.0, 360.0) == pytest.approx(6.0)
    assert window.next_allowed(6.05, 10, 100, 6.0, 360.0) == 6.05
    assert window.next_allowed(6.05, 100, 10, 6.0, 360.0) == pytest.approx(360.0)
    assert window.record(400.0, 360.0).sends == (400.0,)


def test_a_policy_is_kept_for_a_key_after_its_managers_close_and_the_refusal_says_so() -> None:
    from eightyeightpay import MemoryStore, TokenManager

    store = MemoryStore()
    TokenManager(API_KEY, MERCHANT, store=store).close()
    with pytest.raises(ConfigurationError, match="A manager closed earlier in this process"):
        TokenManager(API_KEY, MERCHANT, store=store, policy=Policy(api_per_minute=1))
    with (
        TokenManager(API_KEY, MERCHANT, store=store),
        pytest.raises(ConfigurationError, match="Another manager in this process already"),
    ):
        TokenManager(API_KEY, MERCHANT, store=store, policy=Policy(api_per_minute=1))
