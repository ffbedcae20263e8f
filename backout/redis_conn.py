"""Connecting to the queue's Redis, plain or TLS."""

from __future__ import annotations

import redis

from backout.settings import Settings


def connect(url: str) -> redis.Redis:
    """A Redis client for `url`.

    Heroku Redis serves TLS with a self-signed certificate, and Heroku's documentation for redis-py
    says to connect with `ssl_cert_reqs=None`; the connection is still encrypted.
    """
    if url.startswith("rediss://"):
        return redis.Redis.from_url(url, ssl_cert_reqs=None, health_check_interval=30)
    return redis.Redis.from_url(url, health_check_interval=30)


def from_settings(settings: Settings) -> redis.Redis:
    settings.require("REDIS_URL")
    assert settings.redis_url is not None
    return connect(settings.redis_url)
