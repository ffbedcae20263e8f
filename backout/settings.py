"""The environment contract of the design doc, read into one typed object.

Every variable is checked when the settings are loaded; a command then says which ones it needs
with `Settings.require`, so a missing one is reported by name before anything runs. Values of
secrets (tokens, URLs with passwords) are never echoed in errors or reprs.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar
from urllib.parse import urlsplit

from backout import defaults
from backout.backups import STRATEGIES
from backout.errors import ConfigError
from backout.storage import config as storage_config
from backout.storage.config import StorageSettings
from backout.release_version import parse_release_version

T = TypeVar("T")

# `auto` chooses the database step by the verdict; `+files` also restores the uploads (BACKOUT_FILES)
# to the checkpoint's time.
AUTO_ROLLBACK_POLICIES = tuple(f"{base}{files}" for files in ("", "+files")
                               for base in ("off", "code", "code+down", "code+restore", "auto") if base != "off" or not files)
# BACKOUT_REQUIRE: the verdicts a team accepts (backout.verdict.policy says what each means).
REQUIRE_POLICIES = ("reversible", "expand-only")
REDIRECT_POLICIES = ("follow", "refuse")

HEROKU_API_URL = "https://api.heroku.com"
HEROKU_DATA_URL = "https://api.data.heroku.com"
GITHUB_API_URL = "https://api.github.com"
PYPI_URL = "https://pypi.org"
SENTRY_API_URL = "https://sentry.io"

POSTGRES_FORM = "postgres://USER:PASSWORD@HOST:PORT/DBNAME"
REDIS_FORM = "redis://[:PASSWORD@]HOST:PORT[/DB] or rediss://... for TLS, DB a number 0-15"
# Redis has 16 databases unless its configuration says otherwise (Heroku's cannot be changed).
REDIS_DATABASES = 16
HTTP_FORM = "an http:// or https:// URL"

# The names a command can ask for, with the form shown when one is missing.
_FORMS = {
    "DATABASE_URL": POSTGRES_FORM,
    "BACKOUT_DATABASE_URL": POSTGRES_FORM,
    "REDIS_URL": REDIS_FORM,
    "HEROKU_API_KEY": "a Platform API token (heroku authorizations:create)",
    "HEROKU_APP_NAME": "the app's name (heroku labs:enable runtime-dyno-metadata sets it)",
    "HEROKU_RELEASE_VERSION": "vNN (heroku labs:enable runtime-dyno-metadata sets it)",
    "BACKOUT_HEALTH_URL": "one or more URLs, comma-separated: https://myapp.herokuapp.com/health",
    "GITHUB_TOKEN": "a GitHub token with contents:write and issues:write",
}


@dataclass(frozen=True)
class HealthNumbers:
    """The numbers a post-deploy health watch is judged by (the health policy's too)."""

    grace: float = defaults.HEALTH_GRACE
    interval: float = defaults.HEALTH_INTERVAL
    threshold: int = defaults.HEALTH_THRESHOLD
    error_threshold: int = defaults.HEALTH_ERROR_THRESHOLD
    window: float = defaults.HEALTH_WINDOW
    cooldown: float = defaults.HEALTH_COOLDOWN

    def numbers(self) -> dict[str, Any]:
        """These numbers by name."""
        return {f.name: getattr(self, f.name) for f in fields(HealthNumbers)}


@dataclass(frozen=True)
class HealthSettings(HealthNumbers):
    urls: tuple[str, ...] = ()
    expect: tuple[tuple[int, int], ...] = defaults.HEALTH_EXPECT
    body: str | None = None
    timeout: float = defaults.HEALTH_TIMEOUT
    # A (dotted path, expected value) pair from BACKOUT_HEALTH_JSON.
    json: tuple[str, str] | None = None
    redirects: str = "follow"
    release_header: str | None = None
    release_field: str | None = None
    dry_run: bool = False
    webhook_url: str | None = None
    webhook_secret: str | None = field(default=None, repr=False)
    webhook_port: int | None = None
    sentry_ratio: float = defaults.HEALTH_SENTRY_RATIO


@dataclass(frozen=True)
class WebSettings:
    """`backout web`: the password of its basic auth, and whether it may enqueue rollbacks."""

    password: str | None = field(default=None, repr=False)
    actions: bool = False


@dataclass(frozen=True)
class Settings:
    database_url: str | None = field(default=None, repr=False)
    backout_database_url: str | None = field(default=None, repr=False)
    redis_url: str | None = field(default=None, repr=False)
    heroku_api_key: str | None = field(default=None, repr=False)
    heroku_api_url: str = HEROKU_API_URL
    heroku_data_url: str = HEROKU_DATA_URL
    app_name: str | None = None
    release_version: int | None = None
    slug_commit: str | None = None
    backup: str = "pg_dump"
    backup_dir: Path = Path(".backout/backups")
    migrations: str = "none"
    migrations_path: Path | None = None
    health: HealthSettings = HealthSettings()
    web: WebSettings = WebSettings()
    auto_rollback: str = "code"
    require_policy: str | None = None
    notify_url: str | None = field(default=None, repr=False)
    sentry_dsn: str | None = field(default=None, repr=False)
    github_token: str | None = field(default=None, repr=False)
    github_api_url: str = GITHUB_API_URL
    pypi_url: str = PYPI_URL
    sentry_api_token: str | None = field(default=None, repr=False)
    sentry_api_url: str = SENTRY_API_URL
    sentry_org: str | None = None
    sentry_project: str | None = None
    storage: StorageSettings = StorageSettings()
    # Where restore drills make their scratch database (default: DATABASE_URL's server).
    drill_database_url: str | None = field(default=None, repr=False)
    # The dyno this process runs on (Heroku sets DYNO): its disk is wiped when it exits.
    dyno: str | None = None

    @property
    def ledger_url(self) -> str | None:
        """Where the ledger lives: BACKOUT_DATABASE_URL, else DATABASE_URL."""
        return self.backout_database_url or self.database_url

    def require(self, *names: str) -> None:
        """Fail with ConfigError naming the first variable in `names` that is not set."""
        present = {
            "DATABASE_URL": self.database_url,
            "BACKOUT_DATABASE_URL": self.ledger_url,
            "REDIS_URL": self.redis_url,
            "HEROKU_API_KEY": self.heroku_api_key,
            "HEROKU_APP_NAME": self.app_name,
            "HEROKU_RELEASE_VERSION": self.release_version,
            "BACKOUT_HEALTH_URL": self.health.urls or None,
            "GITHUB_TOKEN": self.github_token,
        }
        for name in names:
            if name not in present:
                raise ValueError(f"unknown setting {name}")
            if present[name] in (None, "", ()):
                shown = "DATABASE_URL or BACKOUT_DATABASE_URL" if name == "BACKOUT_DATABASE_URL" else name
                raise ConfigError(shown, "is not set", _FORMS[name])

    def secrets(self) -> list[str]:
        """Every secret value these settings hold, for redaction."""
        from backout.redact import secrets_from_env

        env = {
            "HEROKU_API_KEY": self.heroku_api_key or "",
            "GITHUB_TOKEN": self.github_token or "",
            "SENTRY_DSN": self.sentry_dsn or "",
            "DATABASE_URL": self.database_url or "",
            "BACKOUT_DATABASE_URL": self.backout_database_url or "",
            "REDIS_URL": self.redis_url or "",
            "BACKOUT_NOTIFY_URL": self.notify_url or "",
            "BACKOUT_SENTRY_API_TOKEN": self.sentry_api_token or "",
            "BACKOUT_HEALTH_WEBHOOK_SECRET": self.health.webhook_secret or "",
            "BACKOUT_WEB_PASSWORD": self.web.password or "",
            "AWS_SECRET_ACCESS_KEY": self.storage.secret_access_key or "",
            "AWS_SESSION_TOKEN": self.storage.session_token or "",
            "BACKOUT_DRILL_DATABASE_URL": self.drill_database_url or "",
        }
        return secrets_from_env(env)


def load(environ: Mapping[str, str] | None = None) -> Settings:
    """Read and check every variable of the contract; raise ConfigError on the first bad one."""
    env = os.environ if environ is None else environ

    def get(name: str) -> str | None:
        value = env.get(name)
        if value is None or value.strip() == "":
            return None
        return value.strip()

    def parsed(name: str, parse: Callable[[str], T], default: T) -> T:
        value = get(name)
        return default if value is None else parse(value)

    database_url = parsed("DATABASE_URL", _postgres_url("DATABASE_URL"), None)
    backout_database_url = parsed("BACKOUT_DATABASE_URL", _postgres_url("BACKOUT_DATABASE_URL"), None)
    # Heroku Redis has set REDIS_TLS_URL beside REDIS_URL on some plans; prefer the TLS one.
    redis_url = parsed("REDIS_TLS_URL", _redis_url("REDIS_TLS_URL"), None) or parsed(
        "REDIS_URL", _redis_url("REDIS_URL"), None
    )
    health = HealthSettings(
        urls=parsed("BACKOUT_HEALTH_URL", _url_list("BACKOUT_HEALTH_URL"), ()),
        expect=parsed("BACKOUT_HEALTH_EXPECT", _status_ranges, defaults.HEALTH_EXPECT),
        body=get("BACKOUT_HEALTH_BODY"),
        timeout=parsed("BACKOUT_HEALTH_TIMEOUT", _seconds("BACKOUT_HEALTH_TIMEOUT", positive=True), defaults.HEALTH_TIMEOUT),
        interval=parsed("BACKOUT_HEALTH_INTERVAL", _seconds("BACKOUT_HEALTH_INTERVAL", positive=True), defaults.HEALTH_INTERVAL),
        threshold=parsed("BACKOUT_HEALTH_THRESHOLD", _count("BACKOUT_HEALTH_THRESHOLD"), defaults.HEALTH_THRESHOLD),
        grace=parsed("BACKOUT_HEALTH_GRACE", _seconds("BACKOUT_HEALTH_GRACE"), defaults.HEALTH_GRACE),
        window=parsed("BACKOUT_HEALTH_WINDOW", _seconds("BACKOUT_HEALTH_WINDOW", positive=True), defaults.HEALTH_WINDOW),
        cooldown=parsed("BACKOUT_HEALTH_COOLDOWN", _seconds("BACKOUT_HEALTH_COOLDOWN"), defaults.HEALTH_COOLDOWN),
        json=parsed("BACKOUT_HEALTH_JSON", _json_match, None),
        redirects=parsed("BACKOUT_HEALTH_REDIRECTS", _choice("BACKOUT_HEALTH_REDIRECTS", REDIRECT_POLICIES), "follow"),
        error_threshold=parsed("BACKOUT_HEALTH_ERROR_THRESHOLD", _count("BACKOUT_HEALTH_ERROR_THRESHOLD"), 0),
        release_header=parsed("BACKOUT_HEALTH_RELEASE_HEADER", _header_name, None),
        release_field=parsed("BACKOUT_HEALTH_RELEASE_FIELD", _json_path("BACKOUT_HEALTH_RELEASE_FIELD"), None),
        dry_run=parsed("BACKOUT_HEALTH_DRY_RUN", _flag("BACKOUT_HEALTH_DRY_RUN"), False),
        webhook_url=parsed("BACKOUT_HEALTH_WEBHOOK_URL", _http_url("BACKOUT_HEALTH_WEBHOOK_URL"), None),
        webhook_secret=get("BACKOUT_HEALTH_WEBHOOK_SECRET"),
        webhook_port=parsed("BACKOUT_HEALTH_WEBHOOK_PORT", _port, None),
        sentry_ratio=parsed("BACKOUT_HEALTH_SENTRY_RATIO", _ratio, defaults.HEALTH_SENTRY_RATIO),
    )
    # Unset, the error threshold follows the failure threshold (defaults.HEALTH_ERRORS_PER_FAILURE says why).
    if not health.error_threshold:
        health = replace(health, error_threshold=defaults.HEALTH_ERRORS_PER_FAILURE * health.threshold)
    if (health.webhook_url or health.webhook_port is not None) and not health.webhook_secret:
        given = "BACKOUT_HEALTH_WEBHOOK_URL" if health.webhook_url else "BACKOUT_HEALTH_WEBHOOK_PORT"
        raise ConfigError(
            "BACKOUT_HEALTH_WEBHOOK_SECRET", f"is not set but {given} is",
            "a random string of 32 characters or more, the secret the app webhook signs deliveries with",
        )
    sentry_check = {
        name: get(name) for name in ("BACKOUT_SENTRY_API_TOKEN", "BACKOUT_SENTRY_ORG", "BACKOUT_SENTRY_PROJECT")
    }
    if any(sentry_check.values()):
        for name, value in sentry_check.items():
            if not value:
                raise ConfigError(
                    name, "is not set but another BACKOUT_SENTRY_* variable is",
                    "all three of BACKOUT_SENTRY_API_TOKEN (scope event:read), BACKOUT_SENTRY_ORG "
                    "and BACKOUT_SENTRY_PROJECT (slugs), or none of them",
                )
    storage = storage_config.load(get)
    dyno = get("DYNO")
    # The default backup is one that can be restored from where it runs: a dyno's disk does not
    # outlive it, so there pg_dump needs object storage, and Heroku's own backups work without.
    default_backup = "heroku" if dyno and storage.archives is None else "pg_dump"
    return Settings(
        database_url=database_url,
        backout_database_url=backout_database_url,
        redis_url=redis_url,
        heroku_api_key=get("HEROKU_API_KEY"),
        heroku_api_url=parsed("BACKOUT_HEROKU_API_URL", _http_url("BACKOUT_HEROKU_API_URL"), HEROKU_API_URL),
        heroku_data_url=parsed("BACKOUT_HEROKU_DATA_URL", _http_url("BACKOUT_HEROKU_DATA_URL"), HEROKU_DATA_URL),
        app_name=parsed("HEROKU_APP_NAME", _app_name, None),
        release_version=parsed("HEROKU_RELEASE_VERSION", _release_version, None),
        slug_commit=get("HEROKU_SLUG_COMMIT"),
        backup=parsed("BACKOUT_BACKUP", _choice("BACKOUT_BACKUP", STRATEGIES), default_backup),
        backup_dir=parsed("BACKOUT_BACKUP_DIR", Path, Path(".backout/backups")),
        migrations=parsed("BACKOUT_MIGRATIONS", _migration_tool, "none"),
        migrations_path=parsed("BACKOUT_MIGRATIONS_PATH", Path, None),
        health=health,
        web=WebSettings(password=get("BACKOUT_WEB_PASSWORD"),
                        actions=parsed("BACKOUT_WEB_ACTIONS", _flag("BACKOUT_WEB_ACTIONS"), False)),
        auto_rollback=parsed(
            "BACKOUT_AUTO_ROLLBACK", _choice("BACKOUT_AUTO_ROLLBACK", AUTO_ROLLBACK_POLICIES), "code"
        ),
        require_policy=parsed("BACKOUT_REQUIRE", _choice("BACKOUT_REQUIRE", REQUIRE_POLICIES), None),
        notify_url=parsed("BACKOUT_NOTIFY_URL", _http_url("BACKOUT_NOTIFY_URL", secret=True), None),
        sentry_dsn=parsed("SENTRY_DSN", _http_url("SENTRY_DSN", secret=True), None),
        github_token=get("GITHUB_TOKEN"),
        github_api_url=parsed("BACKOUT_GITHUB_API_URL", _http_url("BACKOUT_GITHUB_API_URL"), GITHUB_API_URL),
        pypi_url=parsed("BACKOUT_PYPI_URL", _http_url("BACKOUT_PYPI_URL"), PYPI_URL),
        sentry_api_token=sentry_check["BACKOUT_SENTRY_API_TOKEN"],
        sentry_api_url=parsed("BACKOUT_SENTRY_API_URL", _http_url("BACKOUT_SENTRY_API_URL"), SENTRY_API_URL),
        sentry_org=sentry_check["BACKOUT_SENTRY_ORG"],
        sentry_project=sentry_check["BACKOUT_SENTRY_PROJECT"],
        storage=storage,
        dyno=dyno,
        drill_database_url=parsed("BACKOUT_DRILL_DATABASE_URL", _postgres_url("BACKOUT_DRILL_DATABASE_URL"), None),
    )


def setting_names() -> list[str]:
    """Every environment variable the settings read (app.json and docs are checked against it)."""
    return [
        "DATABASE_URL", "BACKOUT_DATABASE_URL", "REDIS_URL", "REDIS_TLS_URL", "HEROKU_API_KEY",
        "BACKOUT_HEROKU_API_URL", "BACKOUT_HEROKU_DATA_URL", "HEROKU_APP_NAME", "HEROKU_RELEASE_VERSION",
        "HEROKU_SLUG_COMMIT", "BACKOUT_BACKUP", "BACKOUT_BACKUP_DIR", "BACKOUT_MIGRATIONS",
        "BACKOUT_MIGRATIONS_PATH", "BACKOUT_HEALTH_URL", "BACKOUT_HEALTH_EXPECT", "BACKOUT_HEALTH_BODY",
        "BACKOUT_HEALTH_TIMEOUT", "BACKOUT_HEALTH_INTERVAL", "BACKOUT_HEALTH_THRESHOLD",
        "BACKOUT_HEALTH_GRACE", "BACKOUT_HEALTH_WINDOW", "BACKOUT_HEALTH_COOLDOWN",
        "BACKOUT_AUTO_ROLLBACK", "BACKOUT_NOTIFY_URL", "SENTRY_DSN", "GITHUB_TOKEN",
        "BACKOUT_GITHUB_API_URL", "BACKOUT_PYPI_URL",
        "BACKOUT_HEALTH_JSON", "BACKOUT_HEALTH_REDIRECTS", "BACKOUT_HEALTH_ERROR_THRESHOLD",
        "BACKOUT_HEALTH_RELEASE_HEADER", "BACKOUT_HEALTH_RELEASE_FIELD", "BACKOUT_HEALTH_DRY_RUN",
        "BACKOUT_HEALTH_WEBHOOK_URL", "BACKOUT_HEALTH_WEBHOOK_SECRET", "BACKOUT_HEALTH_WEBHOOK_PORT",
        "BACKOUT_HEALTH_SENTRY_RATIO", "BACKOUT_SENTRY_API_TOKEN", "BACKOUT_SENTRY_API_URL",
        "BACKOUT_SENTRY_ORG", "BACKOUT_SENTRY_PROJECT", "BACKOUT_WEB_PASSWORD", "BACKOUT_WEB_ACTIONS",
        "DYNO", "BACKOUT_DRILL_DATABASE_URL", *storage_config.names(),
        "BACKOUT_REQUIRE",
    ]


# Parsers. Each returns a function of the raw value that raises ConfigError naming the variable.
# Values are quoted back only for variables that cannot hold a secret.


def _postgres_url(name: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            raise ConfigError(name, "is not a valid URL", POSTGRES_FORM) from None
        if parts.scheme not in ("postgres", "postgresql"):
            raise ConfigError(name, "is not a PostgreSQL URL", POSTGRES_FORM)
        if not parts.hostname and "host=" not in parts.query:
            raise ConfigError(name, "has no host", POSTGRES_FORM)
        if not parts.path.strip("/"):
            raise ConfigError(name, "has no database name", POSTGRES_FORM)
        return value

    return parse


def _redis_url(name: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018
        except ValueError:
            raise ConfigError(name, "is not a valid URL", REDIS_FORM) from None
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ConfigError(name, "is not a Redis URL", REDIS_FORM)
        if parts.scheme != "unix" and not parts.hostname:
            raise ConfigError(name, "has no host", REDIS_FORM)
        # redis-py reads a path it cannot parse as database 0, silently.
        db = parts.path.strip("/") if parts.scheme != "unix" else ""
        if db and not (_ascii_number(db) and int(db) < REDIS_DATABASES):
            raise ConfigError(name, f"names database {db!r}", REDIS_FORM)
        return value

    return parse


def _http_url(name: str, secret: bool = False) -> Callable[[str], str]:
    def parse(value: str) -> str:
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018
        except ValueError:
            parts = None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            shown = "" if secret else f" ({value!r})"
            raise ConfigError(name, f"is not an http(s) URL{shown}", HTTP_FORM)
        return value.rstrip("/")

    return parse


def _url_list(name: str) -> Callable[[str], tuple[str, ...]]:
    one = _http_url(name)

    def parse(value: str) -> tuple[str, ...]:
        return tuple(one(part.strip()) for part in value.split(",") if part.strip())

    return parse


def _choice(name: str, choices: tuple[str, ...]) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if value not in choices:
            raise ConfigError(name, f"is {value!r}", "one of " + ", ".join(choices))
        return value

    return parse


def _migration_tool(value: str) -> str:
    # The adapters' registry is the list of tools; it is loaded only when BACKOUT_MIGRATIONS names one.
    from backout.migrations import ADAPTERS

    return _choice("BACKOUT_MIGRATIONS", tuple(ADAPTERS))(value)


def _seconds(name: str, positive: bool = False) -> Callable[[str], float]:
    form = "a number of seconds greater than 0" if positive else "a number of seconds, 0 or more"

    def parse(value: str) -> float:
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(name, f"is {value!r}", form) from None
        if number != number or number < 0 or (positive and number == 0) or number == float("inf"):
            raise ConfigError(name, f"is {value!r}", form)
        return number

    return parse


def _count(name: str) -> Callable[[str], int]:
    def parse(value: str) -> int:
        if not _ascii_number(value) or not 1 <= int(value) <= 2**31 - 1:
            raise ConfigError(name, f"is {value!r}", "a whole number, 1 or more")
        return int(value)

    return parse


def _status_ranges(value: str) -> tuple[tuple[int, int], ...]:
    form = "HTTP status codes or ranges, comma-separated: 200-399 or 200,204"
    ranges = []
    for part in value.split(","):
        lo, _, hi = part.strip().partition("-")
        hi = hi or lo
        if not (_ascii_number(lo) and _ascii_number(hi) and 100 <= int(lo) <= int(hi) <= 599):
            raise ConfigError("BACKOUT_HEALTH_EXPECT", f"is {value!r}", form)
        ranges.append((int(lo), int(hi)))
    return tuple(ranges)


def _ascii_number(text: str) -> bool:
    """Whether `text` is a plain decimal number (str.isdigit() also takes "٣" and "²")."""
    return text.isascii() and text.isdigit() and len(text) <= 18


def _json_path(name: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*", value):
            raise ConfigError(name, f"is {value!r}", "a JSON field name, dotted for nested fields: release or meta.release")
        return value

    return parse


def _json_match(value: str) -> tuple[str, str]:
    path, sep, expected = value.partition("=")
    form = "FIELD=VALUE, dotted for nested fields: status=ok or checks.db=true"
    if not sep or not expected.strip():
        raise ConfigError("BACKOUT_HEALTH_JSON", f"is {value!r}", form)
    try:
        path = _json_path("BACKOUT_HEALTH_JSON")(path.strip())
    except ConfigError:
        raise ConfigError("BACKOUT_HEALTH_JSON", f"is {value!r}", form) from None
    return path, expected.strip()


def _header_name(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9!#$%&'*+.^_`|~\-]+", value):
        raise ConfigError("BACKOUT_HEALTH_RELEASE_HEADER", f"is {value!r}", "an HTTP header name: X-Release-Version")
    return value


def _flag(name: str) -> Callable[[str], bool]:
    def parse(value: str) -> bool:
        lowered = value.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError(name, f"is {value!r}", "true or false")

    return parse


def _port(value: str) -> int:
    if not _ascii_number(value) or int(value) > 65535:
        raise ConfigError("BACKOUT_HEALTH_WEBHOOK_PORT", f"is {value!r}", "a TCP port, 1-65535 (0 picks a free one)")
    return int(value)


def _ratio(value: str) -> float:
    form = "a number greater than 1: 2 means twice the previous release's errors"
    try:
        number = float(value)
    except ValueError:
        raise ConfigError("BACKOUT_HEALTH_SENTRY_RATIO", f"is {value!r}", form) from None
    if not (1 < number < float("inf")):
        raise ConfigError("BACKOUT_HEALTH_SENTRY_RATIO", f"is {value!r}", form)
    return number


def _release_version(value: str) -> int:
    version = parse_release_version(value)
    if version is None:
        raise ConfigError("HEROKU_RELEASE_VERSION", f"is {value!r}", "vNN, for example v42")
    return version


def _app_name(value: str) -> str:

    if not re.fullmatch(r"[a-z][a-z0-9-]{1,29}", value):
        raise ConfigError(
            "HEROKU_APP_NAME", f"is {value!r}", "a Heroku app name: lowercase letters, digits and dashes, 2-30"
        )
    return value


