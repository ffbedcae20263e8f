"""The storage settings (S3 URLs, credentials, Bucketeer's variables, endpoint and addressing), and
the streaming upload's guarantees against the loopback S3 endpoint: a failure aborts the multipart
upload, so nothing is left under the key, and the pg_dump checkpoint records nothing half-written."""

from __future__ import annotations

import hashlib
import io

import pytest

from backout import settings as settings_module
from backout.backups import pg_dump
from backout.errors import BackoutError, ConfigError
from backout.storage import config
from backout.storage.client import make_client
from backout.storage.download import RangedReader
from backout.storage.upload import MultipartUpload, part_size
from tests.support import S3


def test_storage_urls_credentials_endpoint_and_addressing() -> None:
    loaded = settings_module.load({"BACKOUT_STORAGE_URL": "s3://my-bucket/backups/prod", "AWS_ACCESS_KEY_ID": "AKIA1",
                                   "AWS_SECRET_ACCESS_KEY": "s3cr3t-key", "AWS_REGION": "eu-west-1",
                                   "AWS_ENDPOINT_URL_S3": "https://acct.r2.cloudflarestorage.com/",
                                   "BACKOUT_S3_ADDRESSING": "virtual", "BACKOUT_S3_SSE": "none"})
    storage = loaded.storage
    assert storage.archives == config.Location("my-bucket", "backups/prod/")
    assert (storage.region, storage.endpoint_url, storage.addressing, storage.sse) == (
        "eu-west-1", "https://acct.r2.cloudflarestorage.com", "virtual", "none")
    assert "s3cr3t-key" in loaded.secrets() and "s3cr3t-key" not in repr(loaded)
    client = make_client(storage)
    assert client.meta.config.s3["addressing_style"] == "virtual" and client.meta.region_name == "eu-west-1"
    assert client.meta.endpoint_url == "https://acct.r2.cloudflarestorage.com"
    assert settings_module.load({"BACKOUT_FILES": "s3://up-loads/a, s3://up-loads/b/"}).storage.files == (
        config.Location("up-loads", "a/"), config.Location("up-loads", "b/"))
    for name, value, problem in (("BACKOUT_STORAGE_URL", "https://bucket/x", "is 'https://bucket/x'; expected s3://BUCKET/PREFIX"),
                                 ("BACKOUT_STORAGE_URL", "s3://Bad_Bucket/x", "names the bucket 'Bad_Bucket'"),
                                 ("BACKOUT_FILES", "s3://ok-bucket/x?y=1", "without ?query"),
                                 ("BACKOUT_S3_ADDRESSING", "dns", "one of auto, path, virtual"),
                                 ("AWS_ENDPOINT_URL_S3", "minio:9000", "is not an http(s) URL")):
        with pytest.raises(ConfigError, match=problem.replace("?", r"\?").replace("(", r"\(").replace(")", r"\)")):
            settings_module.load({name: value})


def test_bucketeer_variables_are_read_when_set() -> None:
    env = {"BUCKETEER_BUCKET_NAME": "bucketeer-1234", "BUCKETEER_AWS_ACCESS_KEY_ID": "AKIAB",
           "BUCKETEER_AWS_SECRET_ACCESS_KEY": "bucketeer-secret", "BUCKETEER_AWS_REGION": "us-east-1"}
    storage = settings_module.load(env).storage
    assert storage.archives == config.Location("bucketeer-1234", "backout/")
    assert (storage.access_key_id, storage.secret_access_key, storage.region) == ("AKIAB", "bucketeer-secret", "us-east-1")
    # The app's own AWS_* and BACKOUT_STORAGE_URL win.
    own = settings_module.load({**env, "AWS_ACCESS_KEY_ID": "AKIAOWN", "AWS_SECRET_ACCESS_KEY": "own",
                                "BACKOUT_STORAGE_URL": "s3://elsewhere/cp"}).storage
    assert own.access_key_id == "AKIAOWN" and own.archives == config.Location("elsewhere", "cp/")


def test_on_a_dyno_the_default_backup_is_one_that_can_be_restored() -> None:
    assert settings_module.load({}).backup == "pg_dump"
    assert settings_module.load({"DYNO": "release.1"}).backup == "heroku"
    assert settings_module.load({"DYNO": "release.1", "BACKOUT_STORAGE_URL": "s3://bkt/x"}).backup == "pg_dump"
    assert settings_module.load({"DYNO": "release.1", "BACKOUT_BACKUP": "pitr"}).backup == "pitr"


def test_upload_streams_in_bounded_parts_and_a_failure_leaves_nothing(s3: S3) -> None:
    data = b"".join(hashlib.sha256(str(i).encode()).digest() for i in range(400_000))  # 12.8 MB
    assert part_size(1) == part_size(1000) == 8 << 20 and part_size(1001) == 16 << 20
    with MultipartUpload(s3.client, s3.bucket, "cp/a", base_part=5 << 20) as upload:
        for i in range(0, len(data), 777_777):  # writes that straddle the parts' ends
            upload.write(memoryview(data)[i:i + 777_777])
        stored = upload.complete()
    assert stored["parts"] == 3 and stored["size"] == len(data) and stored["encryption"] == "AES256"
    assert stored["sha256"] == hashlib.sha256(data).hexdigest()
    reader = io.BufferedReader(RangedReader(s3.client, s3.bucket, "cp/a", size=len(data), etag=stored["etag"],
                                            span=3 << 20))
    assert reader.read() == data

    with pytest.raises(RuntimeError):
        with MultipartUpload(s3.client, s3.bucket, "cp/b", base_part=5 << 20) as upload:
            upload.write(data)
            raise RuntimeError("the dump failed half way")
    assert s3.uploads() == [] and "cp/b" not in s3.keys()


def test_a_failed_dump_to_storage_aborts_its_upload(database: str, s3: S3) -> None:
    storage = settings_module.load(s3.env()).storage
    with pytest.raises(BackoutError, match="pg_dump failed"):
        pg_dump.dump_to_storage(database.rsplit("/", 1)[0] + "/no_such_database_here", storage, "shop", "cp_X")
    assert s3.uploads() == [] and s3.keys() == []
