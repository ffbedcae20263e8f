"""The Data API routes (under /client/v11, as on api.data.heroku.com) and the sandbox's own routes:
signed blob, output-stream and backup URLs, and fault injection."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Iterator

from backout_sandbox.core.messages import Request, Response
from backout_sandbox.core.router import Router
from backout_sandbox.databases import is_pitr_plan
from backout_sandbox.faults import Faults
from backout_sandbox.platform import Platform
from backout_sandbox.routing import ApiError, invalid
from backout_sandbox.transfers import Transfers

FORBIDDEN = ApiError(403, "forbidden", "Request has expired or its signature does not match.")


def register(router: Router, platform: Platform, transfers: Transfers, faults: Faults) -> None:
    addons = transfers.addons
    databases = addons.databases
    signer = platform.signer

    add = router.route

    def signed(req: Request) -> None:
        if not signer.valid(req.path, req.query):
            raise FORBIDDEN

    # --- Data API --------------------------------------------------------------------------------

    @add("GET", "/client/v11/databases/{db}")
    def database_info(req: Request, db: str) -> Response:
        addon, app = transfers.database(db)
        if addon["state"] != "provisioned":
            raise ApiError(404, "not_found", f"{addon['name']} is not yet provisioned.")
        plan = addon["plan"].split(":")[1]
        stats = databases.stats(addon["database"])
        info = [
            {"name": "Plan", "values": [plan.replace("-", " ").title()]},
            {"name": "Status", "values": ["Available"]},
            {"name": "Data Size", "values": [_data_size(stats["bytes"])]},
            {"name": "Tables", "values": [str(stats["tables"])]},
            {"name": "PG Version", "values": [stats["version"]]},
            {"name": "Created", "values": [addon["created_at"]]},
            {"name": "Continuous Protection", "values": ["On" if is_pitr_plan(plan) else "Off"]},
        ]
        earliest = None
        if is_pitr_plan(plan):
            earliest = databases.earliest_recoverable().strftime("%Y-%m-%dT%H:%M:%SZ")
            info.append({"name": "Rollback", "values": [f"earliest from {earliest}"]})
        return Response(200, {
            "addon_id": addon["id"], "name": addon["name"], "plan": plan, "created_at": addon["created_at"],
            "app": {"id": app["id"], "name": app["name"]}, "info": info, "waiting?": False,
            "num_bytes": stats["bytes"], "num_tables": stats["tables"], "postgres_version": stats["version"],
            "rollback_earliest": earliest, "following": None, "leader": None, "followers": [], "forks": [],
        })

    @add("GET", "/client/v11/databases/{db}/wait_status")
    def wait_status(req: Request, db: str) -> Response:
        addon, _ = transfers.database(db)
        if addon["state"] == "provisioning":
            status = {"waiting?": True, "error?": False, "message": "Provisioning"}
        elif addon.get("error"):
            status = {"waiting?": False, "error?": True, "message": addon.get("provision_message") or "Failed"}
        elif addon["state"] != "provisioned":
            status = {"waiting?": False, "error?": True, "message": f"The database is {addon['state']}."}
        elif transfers.busy(addon["id"]):
            status = {"waiting?": True, "error?": False, "message": "Restoring"}
        else:
            status = {"waiting?": False, "error?": False, "message": "Available"}
        return Response(200, status)

    @add("POST", "/client/v11/databases/{db}/backups")
    def capture(req: Request, db: str) -> Response:
        return Response(201, transfers.capture(db))

    @add("POST", "/client/v11/databases/{db}/restores")
    def restore(req: Request, db: str) -> Response:
        return Response(201, transfers.restore(db, req.json_object()))

    @add("GET", "/client/v11/apps/{app}/transfers")
    def list_transfers(req: Request, app: str) -> Response:
        return Response(200, transfers.list(app))

    @add("GET", "/client/v11/apps/{app}/transfers/{ref}")
    def transfer_info(req: Request, app: str, ref: str) -> Response:
        return Response(200, transfers.info(app, ref, req.param("verbose") == "true"))

    @add("DELETE", "/client/v11/apps/{app}/transfers/{ref}")
    def delete_transfer(req: Request, app: str, ref: str) -> Response:
        return Response(200, transfers.delete(app, ref))

    @add("POST", "/client/v11/apps/{app}/transfers/{ref}/actions/public-url")
    def public_url(req: Request, app: str, ref: str) -> Response:
        return Response(200, transfers.public_url(app, ref))

    # --- signed URLs: what S3 and log streams are on Heroku --------------------------------------

    @add("PUT", "/sandbox/slugs/{slug}.tgz", public=True)
    def upload_slug(req: Request, slug: str) -> Response:
        signed(req)
        platform.receive_blob(slug, req.copy_body_to)
        return Response(200, b"", {"Content-Type": "text/plain"})

    @add("GET", "/sandbox/slugs/{slug}.tgz", public=True)
    def download_slug(req: Request, slug: str) -> Response:
        signed(req)
        return _file(platform.slugs.blob_path(slug), "application/gzip")

    @add("GET", "/sandbox/backups/{uuid}.dump", public=True)
    def download_backup(req: Request, uuid: str) -> Response:
        signed(req)
        return _file(transfers.backup_file(uuid), "application/octet-stream")

    @add("GET", "/sandbox/releases/{release}/output", public=True)
    def release_output(req: Request, release: str) -> Response:
        signed(req)
        path, running = platform.release_output(release)
        return Response(200, None, {"Content-Type": "text/plain; charset=utf-8"}, _follow(path, running))

    # --- fault injection -------------------------------------------------------------------------

    @add("POST", "/sandbox/faults")
    def add_fault(req: Request) -> Response:
        try:
            return Response(201, faults.apply_json(req.json_object()))
        except (ValueError, TypeError) as exc:
            raise invalid(str(exc)) from None

    @add("GET", "/sandbox/faults")
    def list_faults(req: Request) -> Response:
        return Response(200, faults.rules())

    @add("DELETE", "/sandbox/faults")
    def clear_faults(req: Request) -> Response:
        faults.clear()
        return Response(200, [])


def _data_size(size: int) -> str:
    """A size as pg:info writes it: decimal units, one decimal place (84 B, 7.9 MB)."""
    units = ("B", "KB", "MB", "GB")
    power = 0
    while size >= 1000 ** (power + 1) and power < len(units) - 1:
        power += 1
    return f"{size} B" if power == 0 else f"{size / 1000 ** power:.1f} {units[power]}"


def _file(path: Path, content_type: str) -> Response:
    if not path.is_file():
        raise ApiError(404, "NoSuchKey", "The specified key does not exist.")

    def chunks() -> Iterator[bytes]:
        with open(path, "rb") as f:
            yield from iter(lambda: f.read(1 << 20), b"")

    return Response(200, None, {"Content-Type": content_type, "Content-Length": str(path.stat().st_size)}, chunks())


def _follow(path: Path, running: Callable[[], bool]) -> Iterator[bytes]:
    """The release phase's output so far, then what it writes until it ends (`tail -f`)."""
    while not path.exists():
        if not running():
            return
        time.sleep(0.1)
    with open(path, "rb") as f:
        while True:
            chunk = f.read(1 << 16)
            if chunk:
                yield chunk
            elif running():
                time.sleep(0.1)
            else:
                rest = f.read()
                if rest:
                    yield rest
                return
