"""One boto3 S3 client, configured from the storage settings, and S3 errors as one line.

Only documented S3 operations are used, so the same code works against AWS S3, Cloudflare R2,
MinIO and Bucketeer. Two defaults are changed for them: checksums are sent and checked only when
an operation requires them (botocore's newer default CRC headers are refused by some S3-compatible
services; archives carry their own sha256 and every part its Content-MD5), and the addressing
style is configurable (BACKOUT_S3_ADDRESSING: MinIO and most local endpoints want `path`).
Payloads are not hashed into the request's signature: every part backout uploads carries its
Content-MD5, which S3 checks, and botocore would otherwise hash each payload again over plain HTTP
(a MinIO or a loopback endpoint; over HTTPS it skips it already when Content-MD5 is there).
"""

from __future__ import annotations

from typing import Any

import boto3
import botocore.exceptions
from botocore.config import Config

from backout.errors import BackoutError
from backout.storage.config import StorageSettings

S3_ERRORS = (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError)
# Parts in flight plus the listing and copy threads of a file restore share one connection pool.
POOL = 32


def make_client(storage: StorageSettings) -> Any:
    """A thread-safe boto3 S3 client for these settings."""
    session = boto3.session.Session(
        aws_access_key_id=storage.access_key_id, aws_secret_access_key=storage.secret_access_key,
        aws_session_token=storage.session_token, region_name=storage.region or "us-east-1",
    )
    config = Config(
        s3={"addressing_style": storage.addressing, "payload_signing_enabled": False},
        retries={"max_attempts": 8, "mode": "standard"},
        max_pool_connections=POOL,
        connect_timeout=10,
        read_timeout=120,
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        user_agent_extra="backout",
    )
    return session.client("s3", endpoint_url=storage.endpoint_url, config=config)


def status_of(exc: BaseException) -> int | None:
    """The HTTP status of a botocore ClientError (None for other errors)."""
    if isinstance(exc, botocore.exceptions.ClientError):
        return exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return None


def code_of(exc: BaseException) -> str | None:
    if isinstance(exc, botocore.exceptions.ClientError):
        return exc.response.get("Error", {}).get("Code")
    return None


def failure(exc: BaseException, doing: str) -> BackoutError:
    """A BackoutError saying what was being done and what S3 answered, in one line."""
    if isinstance(exc, botocore.exceptions.ClientError):
        error = exc.response.get("Error", {})
        code = error.get("Code") or status_of(exc)
        message = error.get("Message") or ""
        hint = ""
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", 403):
            hint = "; check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and the key's permissions"
        elif code in ("NoSuchBucket",):
            hint = "; check the bucket in the URL and AWS_REGION / AWS_ENDPOINT_URL_S3"
        return BackoutError(f"{doing}: S3 answered {code}{': ' + message if message else ''}{hint}")
    if isinstance(exc, botocore.exceptions.NoCredentialsError):
        return BackoutError(f"{doing}: no S3 credentials; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
    if isinstance(exc, botocore.exceptions.BotoCoreError):
        return BackoutError(f"{doing}: {exc}")
    return BackoutError(f"{doing}: {type(exc).__name__}: {exc}")
