import pytest

from backout import settings
from backout.errors import ConfigError


def test_defaults_from_an_empty_environment():
    s = settings.load({})
    assert s.backup == "pg_dump"
    assert s.migrations == "none"
    assert s.heroku_api_url == "https://api.heroku.com"
    assert s.heroku_data_url == "https://api.data.heroku.com"
    assert s.health.expect == ((200, 399),)
    assert (s.health.interval, s.health.threshold, s.health.grace) == (10.0, 3, 60.0)
    assert (s.health.window, s.health.cooldown, s.health.timeout) == (600.0, 1800.0, 5.0)
    assert s.ledger_url is None


def test_ledger_defaults_to_database_url():
    s = settings.load({"DATABASE_URL": "postgres://u:p@h:5432/d"})
    assert s.ledger_url == "postgres://u:p@h:5432/d"
    s = settings.load({"DATABASE_URL": "postgres://u:p@h/d", "BACKOUT_DATABASE_URL": "postgres://h/ledger"})
    assert s.ledger_url == "postgres://h/ledger"


def test_release_version_and_lists():
    s = settings.load({
        "HEROKU_RELEASE_VERSION": "v42",
        "HEROKU_APP_NAME": "my-app",
        "BACKOUT_HEALTH_URL": "https://a.example/health, https://b.example/up",
        "BACKOUT_HEALTH_EXPECT": "200,204-206",
    })
    assert s.release_version == 42
    assert s.health.urls == ("https://a.example/health", "https://b.example/up")
    assert s.health.accepts(205) and not s.health.accepts(201)


def test_tls_redis_url_is_preferred():
    s = settings.load({"REDIS_URL": "redis://h:6379", "REDIS_TLS_URL": "rediss://:pw@h:6380"})
    assert s.redis_url == "rediss://:pw@h:6380"


@pytest.mark.parametrize("name,value,expected", [
    ("BACKOUT_BACKUP", "tarball", "one of pg_dump, heroku, pitr, none"),
    ("BACKOUT_MIGRATIONS", "flyway", "one of prisma, alembic, django, dbmate, golang-migrate, none"),
    ("BACKOUT_AUTO_ROLLBACK", "yes", "one of off, code, code+down, code+restore"),
    ("BACKOUT_HEALTH_INTERVAL", "0", "a number of seconds greater than 0"),
    ("BACKOUT_HEALTH_GRACE", "-1", "a number of seconds, 0 or more"),
    ("BACKOUT_HEALTH_THRESHOLD", "three", "a whole number, 1 or more"),
    ("BACKOUT_HEALTH_EXPECT", "2xx", "HTTP status codes or ranges"),
    ("HEROKU_RELEASE_VERSION", "latest", "vNN, for example v42"),
    ("HEROKU_APP_NAME", "My_App", "a Heroku app name"),
    ("BACKOUT_HEROKU_API_URL", "ftp://x", "an http:// or https:// URL"),
])
def test_malformed_values_name_the_variable_and_the_form(name, value, expected):
    with pytest.raises(ConfigError) as info:
        settings.load({name: value})
    assert info.value.variable == name
    assert str(info.value).startswith(name)
    assert expected in str(info.value)
    assert info.value.exit_code == 2


@pytest.mark.parametrize("name,value", [
    ("DATABASE_URL", "mysql://root:hunter2secret@db/app"),
    ("DATABASE_URL", "postgres://root:hunter2secret@db"),
    ("REDIS_URL", "http://:hunter2secret@redis:6379"),
    ("BACKOUT_NOTIFY_URL", "hooks.slack.example/hunter2secret"),
])
def test_errors_never_echo_a_secret(name, value):
    with pytest.raises(ConfigError) as info:
        settings.load({name: value})
    assert name in str(info.value)
    assert "hunter2secret" not in str(info.value)


def test_require_names_the_missing_variable():
    s = settings.load({})
    with pytest.raises(ConfigError, match=r"^DATABASE_URL is not set; expected postgres://"):
        s.require("DATABASE_URL")
    with pytest.raises(ConfigError, match=r"^HEROKU_API_KEY is not set"):
        s.require("HEROKU_API_KEY")
    with pytest.raises(ConfigError, match=r"^DATABASE_URL or BACKOUT_DATABASE_URL is not set"):
        s.require("BACKOUT_DATABASE_URL")


def test_repr_hides_secrets():
    s = settings.load({"HEROKU_API_KEY": "tok-hunter2secret", "DATABASE_URL": "postgres://u:hunter2secret@h/d"})
    assert "hunter2secret" not in repr(s)
    assert sorted(s.secrets()) == ["hunter2secret", "tok-hunter2secret"]


@pytest.mark.parametrize("name, value", [
    ("BACKOUT_FILES", "s3://[uploads/"),
    ("BACKOUT_STORAGE_URL", "s3://[bucket]x/prefix"),
    ("AWS_ENDPOINT_URL_S3", "http://[::1"),
    ("AWS_ENDPOINT_URL", "http://minio:port"),
])
def test_a_storage_url_urllib_cannot_split_is_bad_input(name, value):
    """Found by the CLI fuzz (tests/faults): urllib raises ValueError on a stray bracket or port."""
    with pytest.raises(ConfigError) as raised:
        settings.load({name: value})
    assert name in str(raised.value)
