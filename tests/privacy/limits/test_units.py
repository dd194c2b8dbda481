"""The sans-IO parts: the anonymizer, the client-IP rule, the token buckets and adaptive sampling."""

from __future__ import annotations

import msgspec
import pytest

from actors.privacy.sampling import KEEP_ONE_IN, AdaptiveSampler, is_low_value
from protocol.errors import InvalidInput
from protocol.policy import ProjectPolicy
from protocol.privacy import (
    DROP_CONSENT,
    DROP_SAMPLING,
    FLAG_NO_ADVERTISING,
    FLAG_NO_MARKETING,
    FLAG_NO_PERSONALIZATION,
)
from protocol.privacy_ingest import (
    browser,
    consent_flags,
    decode,
    generalised_ua,
    hashed_id,
    retention_days,
    truncated_ip,
)
from protocol.record import Event
from server.privacy.client_ip import TrustedProxies, resolve
from server.privacy.rate_limit import RateLimited, RateLimiter

CHROME = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.109 Safari/537.36"
EDGE = CHROME + " Edg/120.0.2210.77"
FIREFOX = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:121.0) Gecko/20100101 Firefox/121.0"
SAFARI = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
          "Version/17.1 Mobile/15E148 Safari/604.1")
CHROME_IOS = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 CriOS/119.0.6045.169 Mobile"
OPERA = CHROME + " OPR/105.0.0.0"
SAMSUNG = "Mozilla/5.0 (Linux; Android 13) AppleWebKit/537.36 SamsungBrowser/23.0 Chrome/115.0.0.0 Mobile Safari/537.36"


@pytest.mark.parametrize(("ua", "family", "major"), [
    (CHROME, "Chrome", "120"), (EDGE, "Edge", "120"), (FIREFOX, "Firefox", "121"), (SAFARI, "Safari", "17"),
    (CHROME_IOS, "Chrome", "119"), (OPERA, "Opera", "105"), (SAMSUNG, "Samsung Internet", "23"),
    ("curl/8.4.0", "Other", None), ("", "Other", None), (None, "Other", None),
])  # fmt: skip
def test_the_user_agent_is_generalised_to_family_and_major_version(ua: str | None, family: str, major: str | None) -> None:
    assert browser(ua) == (family, major)
    assert generalised_ua(ua, "high") == family
    assert generalised_ua(ua, "low") == (f"{family} {major}" if major else family)
    assert generalised_ua(ua, "none") == ua


def test_ips_are_truncated_to_24_and_48_bits() -> None:
    assert truncated_ip("203.0.113.77") == "203.0.113.0"
    assert truncated_ip("2001:db8:abcd:12:34::1") == "2001:db8:abcd::"
    assert truncated_ip("::ffff:198.51.100.9") == "198.51.100.0"
    assert truncated_ip("not an ip") is None and truncated_ip(None) is None


def test_identifiers_hash_stably_per_salt() -> None:
    one = hashed_id("salt-a", "anon_session_123")
    assert one == hashed_id("salt-a", "anon_session_123") and one.startswith("anon_") and len(one) == 21
    assert one != hashed_id("salt-b", "anon_session_123")


@pytest.mark.parametrize(("text", "days"), [
    ("30_days", 30), ("1_day", 1), ("2_weeks", 14), ("6_months", 180), ("1_year", 365), ("100_years", 36_500),
])  # fmt: skip
def test_retention_is_counted_in_days(text: str, days: int) -> None:
    assert retention_days(text) == days


@pytest.mark.parametrize("text", ["session", "0_days", "030_days", "30_dayz", "30 days", "101_years", "36501_days", ""])
def test_a_malformed_retention_names_its_field(text: str) -> None:
    with pytest.raises(InvalidInput) as bad:
        retention_days(text)
    assert bad.value.field == "$.privacySettings.retention"


def _body(**changes: object) -> bytes:
    body: dict[str, object] = {"anonymizedSessionId": "s1", "consentLevel": "analytics_only", "eventType": "page_view",
                               "privacySettings": {"anonymization": "low", "retention": "30_days", "sharing": "none"}}
    body.update(changes)
    return msgspec.json.encode(body)


@pytest.mark.parametrize(("changes", "field"), [
    ({"consentLevel": "sometimes"}, "$.consentLevel"),
    ({"privacySettings": {"anonymization": "medium"}}, "$.privacySettings.anonymization"),
    ({"privacySettings": {"sharing": "everyone"}}, "$.privacySettings.sharing"),
    ({"privacySettings": {"retention": 30}}, "$.privacySettings.retention"),
    ({"anonymizedSessionId": ""}, "$.anonymizedSessionId"),
    ({"eventType": ""}, "$.eventType"),
])  # fmt: skip
def test_bad_bodies_name_the_field(changes: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidInput) as bad:
        decode(_body(**changes))
    assert bad.value.field == field


def test_consent_levels_map_to_categories() -> None:
    _, none = decode(_body(consentLevel="none"))
    assert none.dropped is not None and none.dropped.reason == DROP_CONSENT and none.dropped.category == "analytics"
    _, analytics = decode(_body())
    assert analytics.dropped is None
    assert consent_flags("analytics_only", "all") == FLAG_NO_MARKETING | FLAG_NO_PERSONALIZATION | FLAG_NO_ADVERTISING
    assert consent_flags("personalized", "all") == FLAG_NO_MARKETING | FLAG_NO_ADVERTISING
    assert consent_flags("full", "all") == 0
    assert consent_flags("full", "none") == FLAG_NO_ADVERTISING  # sharing none: never to advertising


# -- the client IP -------------------------------------------------------------------------------------

def test_forwarded_for_is_read_only_from_a_trusted_peer() -> None:
    trusted = TrustedProxies.parse("10.0.0.0/8, 192.168.1.1")
    assert resolve("198.51.100.1", "203.0.113.9", trusted) == "198.51.100.1"  # the peer is not a proxy of ours
    assert resolve("10.1.2.3", "203.0.113.9", trusted) == "203.0.113.9"
    # the right-most address that is not a proxy of ours: what the client wrote left of it is its claim
    assert resolve("10.1.2.3", "1.1.1.1, 203.0.113.9, 192.168.1.1, 10.0.0.7", trusted) == "203.0.113.9"
    assert resolve("10.1.2.3", "1.1.1.1, garbage, 10.0.0.7", trusted) == "10.1.2.3"
    assert resolve("10.1.2.3", None, trusted) == "10.1.2.3"
    assert resolve("127.0.0.1", "203.0.113.9", TrustedProxies()) == "127.0.0.1"  # none trusted by default
    with pytest.raises(ValueError, match="'10.0.0.300'"):
        TrustedProxies.parse("10.0.0.300")


# -- token buckets -------------------------------------------------------------------------------------

def test_a_key_gets_its_burst_then_waits_for_the_refill() -> None:
    limiter = RateLimiter()
    policy = ProjectPolicy(rate_limit=5.0, rate_limit_burst=5.0)
    for _ in range(5):
        limiter.admit("p", policy, "pk_a", None, now=100.0)
    with pytest.raises(RateLimited) as refused:
        limiter.admit("p", policy, "pk_a", None, now=100.0)
    assert refused.value.retry_after == 1  # 0.2 s to the next token: whole seconds, at least 1
    limiter.admit("p", policy, "pk_b", None, now=100.0)  # another key has its own bucket
    limiter.admit("p", policy, "pk_a", None, now=100.2)  # one token back after 1/5 s
    slow = ProjectPolicy(rate_limit=0.1, rate_limit_burst=1.0)
    limiter.admit("q", slow, "k", None, now=0.0)
    with pytest.raises(RateLimited) as waiting:
        limiter.admit("q", slow, "k", None, now=2.5)
    assert waiting.value.retry_after == 8  # 7.5 s to the next token, rounded up


def test_a_refused_request_takes_no_token_from_the_other_bucket() -> None:
    limiter = RateLimiter()
    policy = ProjectPolicy(rate_limit=0.001, rate_limit_burst=2.0, ip_rate_limit=0.001)
    limiter.admit("p", policy, "k", "1.1.1.1", now=0.0)
    with pytest.raises(RateLimited, match="per client ip"):
        limiter.admit("p", policy, "k", "1.1.1.1", now=0.0)
    limiter.admit("p", policy, "k", "2.2.2.2", now=0.0)  # the key's second token was not spent above


def test_in_a_cluster_each_node_refills_at_its_share() -> None:
    limiter = RateLimiter(nodes=lambda: 4)
    policy = ProjectPolicy(rate_limit=8.0, rate_limit_burst=8.0)
    for _ in range(2):  # 8 / 4 nodes
        limiter.admit("p", policy, "k", None, now=0.0)
    with pytest.raises(RateLimited) as refused:
        limiter.admit("p", policy, "k", None, now=0.0)
    assert refused.value.retry_after == 1


def test_the_bucket_map_is_bounded() -> None:
    limiter = RateLimiter(max_buckets=100)
    policy = ProjectPolicy(ip_rate_limit=1.0)
    for index in range(1000):
        limiter.admit("p", policy, None, f"10.0.{index // 256}.{index % 256}", now=float(index) / 1000)
    assert len(limiter) <= 100 and limiter.evicted >= 900


# -- adaptive sampling ---------------------------------------------------------------------------------

def _event(name: str, payload: bytes = b"{}") -> Event:
    return Event(id="e", project="p", name=name, source="behavioral", timestamp=0, received_at=0,
                 payload=msgspec.Raw(payload))


def test_low_value_events_are_named_or_marked() -> None:
    assert is_low_value(_event("mouse_move")) and is_low_value(_event("scroll"))
    assert not is_low_value(_event("purchase"))
    assert is_low_value(_event("x", b'{"eventData": {"priority": "low"}}'))
    assert is_low_value(_event("x", b'{"priority": "low"}'))
    assert not is_low_value(_event("x", b'{"priority": "high"}'))


def test_overload_is_judged_per_window_from_the_pipelines_counters() -> None:
    sampler = AdaptiveSampler(latency_ms=100.0)
    assert not sampler.observe(0.0, 0, 0.0, 0)
    assert not sampler.observe(0.5, 10, 5000.0, 0)  # the window has not ended: no judgement yet
    assert sampler.observe(1.0, 10, 5000.0, 0)  # 10 requests at 500 ms mean
    assert not sampler.observe(2.0, 30, 5400.0, 0)  # 20 more at 20 ms
    assert sampler.observe(3.0, 31, 5401.0, 1)  # a backpressure refusal: mailboxes full
    assert not sampler.observe(4.0, 31, 5401.0, 1)  # nothing happened: not overloaded


def test_under_overload_one_low_value_event_in_n_is_kept_and_the_rest_never() -> None:
    sampler = AdaptiveSampler(latency_ms=0.0)
    events = [_event("mouse_move") if i % 2 else _event("purchase") for i in range(4 * KEEP_ONE_IN)]
    assert sampler.decide("p", events) is None  # not overloaded: everything kept
    sampler.observe(0.0, 0, 0.0, 0)
    sampler.observe(1.0, 1, 1.0, 0)
    decisions = sampler.decide("p", events)
    assert decisions is not None
    dropped = [e.name for e, d in zip(events, decisions, strict=True) if d is not None]
    assert set(dropped) == {"mouse_move"} and len(dropped) == 2 * KEEP_ONE_IN - 2
    assert all(d.reason == DROP_SAMPLING for d in decisions if d is not None)
