"""The rollback room's fixtures."""

from __future__ import annotations

import pytest

from tests.rollback.support import Shop


@pytest.fixture
def shop(sandbox, database, redis_url, tmp_path, monkeypatch):
    app = Shop(sandbox, database, redis_url, tmp_path, monkeypatch)
    yield app
    app.close()
