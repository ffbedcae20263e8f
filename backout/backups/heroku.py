"""The `heroku` backup strategy: a Heroku Postgres backup captured through the Data API.

The app's database is the add-on attached as DATABASE. The backup is captured, polled until it
succeeds (progress lines show the bytes processed), and recorded by transfer id and number; the
public URL Heroku gives for it expires (about an hour), so a restore asks for a fresh one by number.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from backout.errors import BackoutError, ConfigError

if TYPE_CHECKING:
    from backout.backups import Backup, BackupContext

ATTACHMENT = "DATABASE"


def database_addon(heroku: Any, app: str) -> dict[str, Any]:
    """The add-on attached to `app` as DATABASE: {"addon_id", "addon_name", "attachment_id"}."""
    for attachment in heroku.attachments(app):
        if attachment.get("name") == ATTACHMENT:
            addon = attachment.get("addon") or {}
            return {"addon_id": addon.get("id"), "addon_name": addon.get("name"),
                    "attachment_id": attachment.get("id")}
    raise BackoutError(
        f"app {app} has no add-on attached as {ATTACHMENT}; attach its Heroku Postgres database as "
        f"DATABASE, or set BACKOUT_BACKUP=pg_dump"
    )


def take(ctx: "BackupContext") -> "Backup":
    if ctx.heroku is None:
        raise ConfigError("HEROKU_API_KEY", "is not set, and BACKOUT_BACKUP=heroku needs the Data API",
                          "a Platform API token (heroku authorizations:create)")
    addon = {"addon_id": ctx.addon_id} if ctx.addon_id else database_addon(ctx.heroku, ctx.app)
    ctx.progress(f"backup: capturing a Heroku Postgres backup of add-on {addon.get('addon_name') or addon['addon_id']}")
    started = ctx.heroku.capture_backup(addon["addon_id"])
    num = started["num"]
    done = ctx.heroku.wait_transfer(ctx.app, num, progress=lambda line: ctx.progress(f"backup: {line}"))
    link = ctx.heroku.backup_url(ctx.app, num)
    ctx.progress(f"backup: transfer {num} succeeded, {done.get('processed_bytes') or 0} bytes")
    return {
        "transfer_id": done.get("uuid") or started.get("uuid"),
        "transfer_num": num,
        "backup_url": link.get("url"),
        "backup_url_expires_at": link.get("expires_at"),
        "addon_id": addon["addon_id"],
        "addon_name": addon.get("addon_name"),
        "size": done.get("processed_bytes"),
        "finished_at": done.get("finished_at"),
    }
