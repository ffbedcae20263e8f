"""`redis_conn.connect` against a real TLS redis-server with a self-signed certificate, as Heroku Redis has."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest
import redis

from backout.redis_conn import connect

pytestmark = pytest.mark.integration

PASSWORD = "tls-test-password"


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def self_signed_certificates(where: Path) -> None:
    """A throwaway CA and a server certificate it signed, with EC keys (fast to make)."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "1",
            "-subj", "/CN=backout throwaway CA", cwd=where)
    openssl("req", *ec, "-keyout", "redis.key", "-out", "redis.csr", "-subj", "/CN=127.0.0.1", cwd=where)
    openssl("x509", "-req", "-in", "redis.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "redis.crt", "-days", "1", cwd=where)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def tls_redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    assert shutil.which("openssl"), "the openssl CLI is needed (Debian package openssl)"
    where = tmp_path_factory.mktemp("redis-tls")
    self_signed_certificates(where)
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--bind", "127.0.0.1", "--port", "0", "--tls-port", str(port),
         "--tls-cert-file", "redis.crt", "--tls-key-file", "redis.key", "--tls-ca-cert-file", "ca.crt",
         "--tls-auth-clients", "no", "--requirepass", PASSWORD, "--save", "", "--appendonly", "no"],
        cwd=where, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    url = f"rediss://:{PASSWORD}@127.0.0.1:{port}"
    deadline = time.monotonic() + 10
    while True:
        if proc.poll() is not None:
            pytest.fail(f"redis-server with TLS did not start (built without TLS?): {proc.stdout.read()[-500:]}")
        try:
            connect(url).ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.05)
    yield url
    proc.terminate()
    proc.wait(10)


def test_rediss_url_connects_to_a_self_signed_tls_redis(tls_redis_url):
    client = connect(tls_redis_url)
    assert client.ping() is True
    assert client.set("backout:tls", "yes") is True
    assert client.get("backout:tls") == b"yes"
    assert client.connection_pool.connection_class is redis.SSLConnection
    client.close()


def test_the_certificate_really_is_untrusted_without_connects_setting(tls_redis_url):
    # The default of redis-py verifies certificates, and this one is signed by nobody it knows:
    # proof that the test server is like Heroku's and that connect() is what makes it work.
    strict = redis.Redis.from_url(tls_redis_url)
    with pytest.raises(redis.ConnectionError, match="certificate verify failed"):
        strict.ping()
    strict.close()


def test_the_tls_port_refuses_plain_text(tls_redis_url):
    plain = connect(tls_redis_url.replace("rediss://", "redis://"))
    with pytest.raises(redis.ConnectionError):
        plain.ping()
    plain.close()


def test_plain_redis_url_still_works(redis_url):
    client = connect(redis_url)
    assert client.ping() is True
    client.set("backout:plain", "yes")
    assert client.get("backout:plain") == b"yes"
    assert client.connection_pool.connection_class is redis.Connection
    client.close()
