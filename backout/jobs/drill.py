"""The scheduled restore drill job: `run_drill(app)` (see `backout.drill`)."""

from __future__ import annotations

import logging
from typing import Any

from backout import ledger
from backout.drill import drill
from backout.settings import load

log = logging.getLogger(__name__)


def run_drill(app: str) -> dict[str, Any]:
    """Drill the app's newest pg_dump checkpoint; the result is recorded on the checkpoint."""
    settings = load()
    settings.require("BACKOUT_DATABASE_URL", "DATABASE_URL")
    with ledger.connect(settings.ledger_url or "") as conn:
        return drill(settings, conn, app, lambda line: log.info("%s", line))
