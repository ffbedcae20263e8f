"""The object-storage part of the environment contract: where archives and uploads live, and how
to reach the S3-compatible service (AWS S3, Cloudflare R2, MinIO, Bucketeer).

Credentials are the usual AWS variables; when they are absent and the Bucketeer add-on is attached,
its own `BUCKETEER_*` variables are used, and its bucket (under `backout/`) holds the archives unless
`BACKOUT_STORAGE_URL` says otherwise.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, TypeVar
from urllib.parse import urlsplit

from backout.errors import ConfigError

T = TypeVar("T")

S3_FORM = "s3://BUCKET/PREFIX"
ADDRESSING_STYLES = ("auto", "path", "virtual")
SSE_CHOICES = ("AES256", "aws:kms", "none")
KEEP_FORM = "a count, an age, or both: 20, 30d, 20,30d (ages in h, d or w)"
# Where archives go in a Bucketeer bucket when BACKOUT_STORAGE_URL is not set: not under
# `public/`, which Bucketeer serves to everyone.
BUCKETEER_PREFIX = "backout"
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]")
_AGE_UNITS = {"h": 3600, "d": 86400, "w": 7 * 86400}


@dataclass(frozen=True)
class Location:
    """A bucket and a key prefix ("" or ending in "/")."""

    bucket: str
    prefix: str = ""

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def key(self, name: str) -> str:
        return f"{self.prefix}{name}"


@dataclass(frozen=True)
class Keep:
    """BACKOUT_KEEP: keep the newest `count` checkpoints and/or those younger than `age` seconds;
    a checkpoint either keeps is kept."""

    count: int | None = None
    age: float | None = None

    @property
    def active(self) -> bool:
        return self.count is not None or self.age is not None

    def describe(self) -> str:
        parts = []
        if self.count is not None:
            parts.append(f"the newest {self.count}")
        if self.age is not None:
            parts.append(f"those younger than {_age_text(self.age)}")
        return " and ".join(parts) or "everything"


@dataclass(frozen=True)
class StorageSettings:
    archives: Location | None = None  # BACKOUT_STORAGE_URL
    files: tuple[Location, ...] = ()  # BACKOUT_FILES
    files_required: bool = True  # BACKOUT_FILES_REQUIRED
    keep: Keep = Keep()  # BACKOUT_KEEP
    drill_every: float | None = None  # BACKOUT_DRILL_EVERY, seconds
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    region: str | None = None
    endpoint_url: str | None = None
    addressing: str = "auto"
    sse: str = "AES256"

    @property
    def secrets(self) -> list[str]:
        return [s for s in (self.secret_access_key, self.session_token) if s]


def load(get: Callable[[str], str | None]) -> StorageSettings:
    """Read the storage variables through `get` (a stripped value or None); ConfigError on a bad one."""
    bucketeer = get("BUCKETEER_BUCKET_NAME")
    archives = _optional(get, "BACKOUT_STORAGE_URL", parse_location)
    if archives is None and bucketeer:
        archives = Location(bucketeer, BUCKETEER_PREFIX + "/")
    files = tuple(parse_location(part.strip(), "BACKOUT_FILES")
                  for part in (get("BACKOUT_FILES") or "").split(",") if part.strip())
    use_bucketeer = bool(bucketeer) and not get("AWS_ACCESS_KEY_ID")
    creds = "BUCKETEER_AWS_" if use_bucketeer else "AWS_"
    endpoint = get("AWS_ENDPOINT_URL_S3") or get("AWS_ENDPOINT_URL")
    if endpoint is not None:
        name = "AWS_ENDPOINT_URL_S3" if get("AWS_ENDPOINT_URL_S3") else "AWS_ENDPOINT_URL"
        try:
            parts = urlsplit(endpoint)
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:  # "http://[bad" or a port that is not a number
            parts = urlsplit("")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(name, f"is not an http(s) URL ({endpoint!r})",
                              "the S3 endpoint: https://<account>.r2.cloudflarestorage.com, http://minio:9000")
    return StorageSettings(
        archives=archives,
        files=files,
        files_required=_flag(get, "BACKOUT_FILES_REQUIRED", True),
        keep=_optional(get, "BACKOUT_KEEP", parse_keep) or Keep(),
        drill_every=_optional(get, "BACKOUT_DRILL_EVERY", _drill_every),
        access_key_id=get(creds + "ACCESS_KEY_ID"),
        secret_access_key=get(creds + "SECRET_ACCESS_KEY"),
        session_token=None if use_bucketeer else get("AWS_SESSION_TOKEN"),
        region=get(creds + "REGION") or get("AWS_DEFAULT_REGION"),
        endpoint_url=endpoint.rstrip("/") if endpoint else None,
        addressing=_choice(get, "BACKOUT_S3_ADDRESSING", ADDRESSING_STYLES, "auto"),
        sse=_choice(get, "BACKOUT_S3_SSE", SSE_CHOICES, "AES256"),
    )


def parse_location(value: str, name: str = "BACKOUT_STORAGE_URL") -> Location:
    try:
        parts = urlsplit(value)
    except ValueError:  # "s3://[bucket": urllib reads a bracket as an IPv6 address
        raise ConfigError(name, f"is {value!r}", S3_FORM) from None
    if parts.scheme != "s3" or not parts.netloc:
        raise ConfigError(name, f"is {value!r}", S3_FORM)
    if not _BUCKET.fullmatch(parts.netloc) or ".." in parts.netloc:
        raise ConfigError(name, f"names the bucket {parts.netloc!r}, which is not a valid S3 bucket name",
                          S3_FORM + " with a bucket name of 3-63 lowercase letters, digits, dots and dashes")
    if parts.query or parts.fragment:
        raise ConfigError(name, f"is {value!r}", S3_FORM + " without ?query or #fragment")
    prefix = parts.path.lstrip("/")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    return Location(parts.netloc, prefix)


def parse_keep(value: str) -> Keep:
    count: int | None = None
    age: float | None = None
    for part in re.split(r"[,\s]+", value.strip()):
        if part.isdigit() and int(part) >= 1 and count is None:
            count = int(part)
        elif re.fullmatch(r"\d+[hdw]", part) and int(part[:-1]) >= 1 and age is None:
            age = float(int(part[:-1]) * _AGE_UNITS[part[-1]])
        else:
            raise ConfigError("BACKOUT_KEEP", f"is {value!r}", KEEP_FORM)
    return Keep(count, age)


def _drill_every(value: str) -> float:
    if not re.fullmatch(r"\d+[hdw]", value) or int(value[:-1]) < 1:
        raise ConfigError("BACKOUT_DRILL_EVERY", f"is {value!r}", "an interval in hours, days or weeks: 24h, 7d, 1w")
    return float(int(value[:-1]) * _AGE_UNITS[value[-1]])


def _age_text(seconds: float) -> str:
    for unit, size in (("w", 7 * 86400), ("d", 86400), ("h", 3600)):
        if seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:.0f}s"


def _optional(get: Callable[[str], str | None], name: str, parse: Callable[[str], T]) -> T | None:
    value = get(name)
    return None if value is None else parse(value)


def _flag(get: Callable[[str], str | None], name: str, default: bool) -> bool:
    value = get(name)
    if value is None:
        return default
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise ConfigError(name, f"is {value!r}", "true or false")


def _choice(get: Callable[[str], str | None], name: str, choices: tuple[str, ...], default: str) -> str:
    value = get(name)
    if value is None:
        return default
    if value not in choices:
        raise ConfigError(name, f"is {value!r}", "one of " + ", ".join(choices))
    return value


def names() -> list[str]:
    """The variables this module reads (for settings.setting_names)."""
    return ["BACKOUT_STORAGE_URL", "BACKOUT_FILES", "BACKOUT_FILES_REQUIRED", "BACKOUT_KEEP",
            "BACKOUT_DRILL_EVERY", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
            "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3",
            "BACKOUT_S3_ADDRESSING", "BACKOUT_S3_SSE", "BUCKETEER_BUCKET_NAME",
            "BUCKETEER_AWS_ACCESS_KEY_ID", "BUCKETEER_AWS_SECRET_ACCESS_KEY", "BUCKETEER_AWS_REGION"]
