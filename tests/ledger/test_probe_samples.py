"""Probe samples in the ledger: written in one batch, read back newest-limited and oldest first, pruned by age."""

from __future__ import annotations

import time

import pytest

from backout import ledger

pytestmark = pytest.mark.integration


def _sample(at: float, outcome: str = "pass", app: str = "shop", **extra) -> dict:
    return {"app": app, "release_version": 4, "url": "https://shop.example.com/health", "at": at,
            "outcome": outcome, "status": 200 if outcome == "pass" else 500, "elapsed": 0.012, **extra}


def test_samples_round_trip_oldest_first_and_limited_to_the_newest(database):
    now = time.time()
    with ledger.connect(database) as conn:
        ledger.record_probe_samples(conn, [_sample(now - 3, "fail", counted=False), _sample(now - 2),
                                           _sample(now - 1), _sample(now, app="other")])
        samples = ledger.probe_samples(conn, "shop")
        assert [s["outcome"] for s in samples] == ["fail", "pass", "pass"]
        assert samples[0]["counted"] is False and samples[1]["counted"] is True
        assert samples[0]["status"] == 500 and abs(samples[0]["elapsed"] - 0.012) < 1e-6
        assert samples[0]["at"] < samples[1]["at"] < samples[2]["at"]
        assert [s["at"] for s in ledger.probe_samples(conn, "shop", limit=2)] == [s["at"] for s in samples[1:]]
        ledger.record_probe_samples(conn, [])


def test_old_samples_are_pruned(database):
    now = time.time()
    with ledger.connect(database) as conn:
        ledger.record_probe_samples(conn, [_sample(now - 20 * 86400), _sample(now - 86400), _sample(now)])
        assert ledger.prune_probe_samples(conn, days=14) == 1
        assert len(ledger.probe_samples(conn, "shop")) == 2
