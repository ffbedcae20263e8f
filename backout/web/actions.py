"""The page's "Roll back to here": the plan a rollback would follow, and asking for it, with the
same functions scripts and the CLI use (`build_plan`, `backout.enqueue_rollback`).

The page asks for the app's name to be typed before anything is enqueued, whatever the database
step (a rollback of code alone still takes the app off its current release); the typed name is
then passed on as `confirm`, so a database step is allowed exactly as `--confirm APP` allows it.
"""

from __future__ import annotations

from backout import ledger
from backout.errors import BackoutError, BadInput
from backout.heroku import HerokuClient
from backout.rollback.enqueue import enqueue_rollback
from backout.rollback.plan import Plan, build_plan
from backout.settings import Settings


def preview(settings: Settings, app: str, to: str, db: str) -> tuple[Plan | None, str | None]:
    """The plan of rolling `app` back to `to` with `--db db` (confirmed, as it would be once the
    name is typed), or None and the reason it would be refused. Nothing is written."""
    assert settings.ledger_url is not None
    try:
        settings.require("HEROKU_API_KEY")
        conn = ledger.connect(settings.ledger_url)
        try:
            with HerokuClient.from_settings(settings) as client:
                return build_plan(client, conn, app, to, db, confirm=app, settings=settings), None
        finally:
            conn.close()
    except BackoutError as exc:
        return None, str(exc)


def request(settings: Settings, app: str, to: str, db: str, typed: str, user: str) -> str:
    """Enqueue the rollback once the app's name was typed; returns the request id.

    BadInput (nothing written) when the name does not match or the plan is refused.
    """
    if typed != app:
        raise BadInput(f"the name typed ({typed!r}) is not the app's name; type {app} to roll it back")
    return enqueue_rollback(app, to, db=db, confirm=typed, settings=settings, requested_by=f"web:{user}")
