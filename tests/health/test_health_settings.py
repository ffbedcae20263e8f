"""The health-check settings: parsed, validated by name, secrets kept out of reprs."""

import pytest

from backout import settings
from backout.errors import ConfigError


def test_health_defaults():
    h = settings.load({}).health
    assert h.json is None and h.redirects == "follow" and h.dry_run is False
    assert h.error_threshold == 6  # twice the default failure threshold of 3
    assert h.release_header is None and h.release_field is None
    assert h.webhook_url is None and h.webhook_secret is None and h.webhook_port is None
    assert h.sentry_ratio == 2.0


def test_health_values_parsed():
    s = settings.load({
        "BACKOUT_HEALTH_JSON": "checks.db = true",
        "BACKOUT_HEALTH_REDIRECTS": "refuse",
        "BACKOUT_HEALTH_THRESHOLD": "4",
        "BACKOUT_HEALTH_RELEASE_HEADER": "X-Release",
        "BACKOUT_HEALTH_RELEASE_FIELD": "meta.release",
        "BACKOUT_HEALTH_DRY_RUN": "yes",
        "BACKOUT_HEALTH_WEBHOOK_URL": "https://hooks.example/dyno-events",
        "BACKOUT_HEALTH_WEBHOOK_SECRET": "s3cret-value-for-hmac",
        "BACKOUT_HEALTH_WEBHOOK_PORT": "8123",
        "BACKOUT_SENTRY_API_TOKEN": "sntrys_tokenvalue",
        "BACKOUT_SENTRY_ORG": "acme",
        "BACKOUT_SENTRY_PROJECT": "web",
    })
    h = s.health
    assert h.json == ("checks.db", "true")
    assert h.redirects == "refuse" and h.dry_run is True
    assert h.error_threshold == 8  # follows the failure threshold when not set
    assert (h.release_header, h.release_field) == ("X-Release", "meta.release")
    assert (h.webhook_url, h.webhook_port) == ("https://hooks.example/dyno-events", 8123)
    assert (s.sentry_org, s.sentry_project, s.sentry_api_url) == ("acme", "web", "https://sentry.io")
    assert "s3cret-value-for-hmac" not in repr(s) and "sntrys_tokenvalue" not in repr(s)
    assert {"s3cret-value-for-hmac", "sntrys_tokenvalue"} <= set(s.secrets())


def test_explicit_error_threshold():
    assert settings.load({"BACKOUT_HEALTH_ERROR_THRESHOLD": "2"}).health.error_threshold == 2


@pytest.mark.parametrize("name,value,expected", [
    ("BACKOUT_HEALTH_JSON", "status", "FIELD=VALUE"),
    ("BACKOUT_HEALTH_JSON", "a..b=1", "FIELD=VALUE"),
    ("BACKOUT_HEALTH_REDIRECTS", "maybe", "one of follow, refuse"),
    ("BACKOUT_HEALTH_ERROR_THRESHOLD", "0", "a whole number, 1 or more"),
    ("BACKOUT_HEALTH_RELEASE_HEADER", "X Release", "an HTTP header name"),
    ("BACKOUT_HEALTH_RELEASE_FIELD", "meta/release", "a JSON field name"),
    ("BACKOUT_HEALTH_DRY_RUN", "perhaps", "true or false"),
    ("BACKOUT_HEALTH_WEBHOOK_PORT", "70000", "a TCP port"),
    ("BACKOUT_HEALTH_WEBHOOK_URL", "hooks.example", "an http:// or https:// URL"),
    ("BACKOUT_HEALTH_SENTRY_RATIO", "1", "a number greater than 1"),
    ("BACKOUT_SENTRY_API_URL", "sentry", "an http:// or https:// URL"),
])
def test_malformed_health_values_name_the_variable(name, value, expected):
    env = {name: value}
    if name == "BACKOUT_HEALTH_WEBHOOK_URL":
        env["BACKOUT_HEALTH_WEBHOOK_SECRET"] = "x" * 32
    with pytest.raises(ConfigError) as info:
        settings.load(env)
    assert info.value.variable == name
    assert expected in str(info.value)


def test_webhook_url_needs_its_secret():
    with pytest.raises(ConfigError) as info:
        settings.load({"BACKOUT_HEALTH_WEBHOOK_URL": "https://hooks.example/x"})
    assert info.value.variable == "BACKOUT_HEALTH_WEBHOOK_SECRET"


def test_sentry_check_needs_all_three_and_never_echoes_the_token():
    with pytest.raises(ConfigError) as info:
        settings.load({"BACKOUT_SENTRY_API_TOKEN": "sntrys_secret", "BACKOUT_SENTRY_ORG": "acme"})
    assert info.value.variable == "BACKOUT_SENTRY_PROJECT"
    assert "sntrys_secret" not in str(info.value)


def test_new_names_are_listed():
    names = set(settings.setting_names())
    for name in ("BACKOUT_HEALTH_JSON", "BACKOUT_HEALTH_REDIRECTS", "BACKOUT_HEALTH_ERROR_THRESHOLD",
                 "BACKOUT_HEALTH_RELEASE_HEADER", "BACKOUT_HEALTH_RELEASE_FIELD", "BACKOUT_HEALTH_DRY_RUN",
                 "BACKOUT_HEALTH_WEBHOOK_URL", "BACKOUT_HEALTH_WEBHOOK_SECRET", "BACKOUT_HEALTH_WEBHOOK_PORT",
                 "BACKOUT_HEALTH_SENTRY_RATIO", "BACKOUT_SENTRY_API_TOKEN", "BACKOUT_SENTRY_API_URL",
                 "BACKOUT_SENTRY_ORG", "BACKOUT_SENTRY_PROJECT"):
        assert name in names


def test_webhook_port_needs_its_secret():
    with pytest.raises(ConfigError) as info:
        settings.load({"BACKOUT_HEALTH_WEBHOOK_PORT": "8080"})
    assert info.value.variable == "BACKOUT_HEALTH_WEBHOOK_SECRET"
    assert "BACKOUT_HEALTH_WEBHOOK_PORT is" in str(info.value)
