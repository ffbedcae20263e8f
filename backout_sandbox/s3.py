"""A real S3 endpoint on loopback: moto's standalone server, started as its own process.

The tests, the demo and the benchmarks all start it from here, on a free port, and talk to it
over HTTP with an ordinary S3 client (path-style addressing). It supports what backout uses:
versioned buckets, delete markers, multipart uploads, lifecycle rules. It is never imported
in-process: moto's in-process mocks patch the client, and the point is a real endpoint.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

START_TIMEOUT = 30.0
# moto accepts any credentials; these are what the clients of the local endpoint are given.
ACCESS_KEY_ID = "backout-local"
SECRET_ACCESS_KEY = "backout-local-secret"
REGION = "us-east-1"


class LocalS3:
    """`with LocalS3() as s3: s3.url, s3.env()`: moto's server on 127.0.0.1 until the block ends."""

    def __init__(self, log: Path | None = None) -> None:
        self.log = log
        self.port = 0
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """The variables that point an S3 client (backout's, the AWS CLI's, boto3's) at this endpoint."""
        return {"AWS_ENDPOINT_URL_S3": self.url, "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
                "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY, "AWS_REGION": REGION,
                "BACKOUT_S3_ADDRESSING": "path"}

    def start(self) -> "LocalS3":
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL
        for _ in range(5):  # a port picked free can be taken before the server binds it
            self.port = _free_port()
            self.process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**os.environ, "MOTO_ALLOW_NONEXISTENT_REGION": "true"},
            )
            if self._wait_ready():
                return self
            self.stop()
        raise RuntimeError("moto's S3 server did not start (is moto[server] installed?)")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def __enter__(self) -> "LocalS3":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(f"{self.url}/moto-api/data.json", timeout=2):
                    return True
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.1)
        return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


if __name__ == "__main__":  # `python -m backout_sandbox.s3`: run one until Ctrl-C
    with LocalS3() as server:
        for name, value in server.env().items():
            print(f"export {name}={value}")
        try:
            server.process.wait()  # type: ignore[union-attr]
        except KeyboardInterrupt:
            pass
