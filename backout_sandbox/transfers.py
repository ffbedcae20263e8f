"""The Data API's transfers: backups that really run `pg_dump` and restores that really run `pg_restore`.

A backup (`b001`) dumps an add-on's database in custom format into the sandbox's work directory;
its `to_url` is a sandbox URL, readable through a signed `public-url` (as Heroku's S3 links are).
A restore (`r002`) downloads a backup over HTTP, wherever it lives, and restores it with
`pg_restore --clean --if-exists --no-owner --no-acl` into the add-on's database. Both run in the
background; the transfer says how far they got (`processed_bytes`), and when they end
(`finished_at`, `succeeded`, `logs`). Passwords reach pg_dump and pg_restore through PGPASSWORD,
never their command lines.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import urlsplit

import requests

from backout_sandbox import processes
from backout_sandbox.addons import AddOns
from backout_sandbox.core.store import new_id, now
from backout_sandbox.databases import libpq
from backout_sandbox.routing import ApiError, invalid, not_found

PUBLIC_URL_TTL = 3600  # Heroku's public backup URLs last an hour
TOOL_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ")
_HIDDEN = {"app_id", "addon_id", "file", "logs"}


class Transfers:
    def __init__(self, addons: AddOns, work_dir: Path) -> None:
        self.addons = addons
        self.platform = addons.platform
        self.store = addons.platform.store
        self.signer = addons.platform.signer
        self.dir = work_dir / "transfers"
        self._threads: set[threading.Thread] = set()
        self._procs: set[subprocess.Popen[bytes]] = set()
        self._guard = threading.Lock()
        self._stopping = threading.Event()

    def start(self) -> None:
        with self.store.change() as data:
            for transfer in data["transfers"].values():
                if not transfer["finished_at"]:
                    self._finish(transfer, False, "The transfer was interrupted: the sandbox stopped while it ran.")

    def stop(self) -> None:
        self._stopping.set()
        with self._guard:
            procs, threads = list(self._procs), list(self._threads)
        for proc in procs:
            processes.terminate(proc, 5)
        for thread in threads:
            thread.join(30)

    # --- rendering and lookups -----------------------------------------------------------------

    def render(self, transfer: dict[str, Any], verbose: bool = False) -> dict[str, Any]:
        shown = {k: v for k, v in transfer.items() if k not in _HIDDEN}
        if verbose:
            shown["logs"] = list(transfer["logs"])
        return shown

    def find(self, data: dict[str, Any], app: dict[str, Any], ref: str) -> dict[str, Any]:
        for transfer in data["transfers"].values():
            if transfer["app_id"] == app["id"] and (ref.lower() == transfer["uuid"] or ref == str(transfer["num"])):
                return transfer
        raise not_found("transfer")

    def list(self, app_ident: str) -> list[dict[str, Any]]:
        with self.store.lock:
            data = self.store.data
            app = self.platform.find_app(data, app_ident)
            mine = [t for t in data["transfers"].values() if t["app_id"] == app["id"] and not t["deleted_at"]]
            return [self.render(t) for t in sorted(mine, key=lambda t: t["num"])]

    def info(self, app_ident: str, ref: str, verbose: bool) -> dict[str, Any]:
        with self.store.lock:
            data = self.store.data
            transfer = self.find(data, self.platform.find_app(data, app_ident), ref)
            return self.render(transfer, verbose)

    def delete(self, app_ident: str, ref: str) -> dict[str, Any]:
        with self.store.change() as data:
            transfer = self.find(data, self.platform.find_app(data, app_ident), ref)
            if not transfer["finished_at"]:
                raise invalid("The transfer is still running; cancel it or wait until it finishes.")
            transfer["deleted_at"] = transfer["updated_at"] = now()
            if transfer.get("file"):
                Path(transfer["file"]).unlink(missing_ok=True)
            return self.render(transfer)

    def public_url(self, app_ident: str, ref: str) -> dict[str, Any]:
        with self.store.lock:
            data = self.store.data
            transfer = self.find(data, self.platform.find_app(data, app_ident), ref)
            if transfer["to_type"] != "gof3r" or not transfer["succeeded"] or transfer["deleted_at"]:
                raise invalid("Only a backup that succeeded and was not deleted has a public URL.")
        url, expires = self.signer.url(self._download_path(transfer["uuid"]), PUBLIC_URL_TTL)
        return {"url": url, "expires_at": expires}

    def backup_file(self, uuid: str) -> Path:
        with self.store.lock:
            transfer = self.store.data["transfers"].get(uuid.lower())
            if not transfer or not transfer.get("succeeded") or transfer["deleted_at"] or not transfer.get("file"):
                raise ApiError(404, "NoSuchKey", "The specified key does not exist.")
            return Path(transfer["file"])

    def _download_path(self, uuid: str) -> str:
        return f"/sandbox/backups/{uuid}.dump"

    # --- database status -----------------------------------------------------------------------

    def database(self, ident: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """An add-on (by id or name) and its app, for the Data API's /client/v11/databases/{id}."""
        with self.store.lock:
            data = self.store.data
            addon = self.addons.find(data, ident)
            return dict(addon), dict(data["apps"][addon["app_id"]])

    def busy(self, addon_id: str) -> bool:
        with self.store.lock:
            return any(t["addon_id"] == addon_id and t["to_type"] == "pg_restore" and not t["finished_at"]
                       for t in self.store.data["transfers"].values())

    # --- backups and restores ------------------------------------------------------------------

    def _new(self, data: dict[str, Any], addon: dict[str, Any], **fields: Any) -> dict[str, Any]:
        app_id = addon["app_id"]
        num = data["transfer_nums"].get(app_id, 0) + 1
        data["transfer_nums"][app_id] = num
        stamp = now()
        transfer = {
            "uuid": new_id(), "num": num, "app_id": app_id, "addon_id": addon["id"], "created_at": stamp,
            "updated_at": stamp, "started_at": None, "finished_at": None, "canceled_at": None, "deleted_at": None,
            "purged_at": None, "succeeded": False, "processed_bytes": 0, "source_bytes": 0, "warnings": 0,
            "num_attempts": 1, "options": {}, "schedule": None, "logs": [], "file": None, "to_url": None,
            **fields,
        }
        data["transfers"][transfer["uuid"]] = transfer
        return transfer

    def _attachment_name(self, data: dict[str, Any], addon: dict[str, Any]) -> str:
        names = [a["name"] for a in data["attachments"].values()
                 if a["addon_id"] == addon["id"] and a["app_id"] == addon["app_id"]]
        return "DATABASE" if "DATABASE" in names else (sorted(names)[0] if names else addon["name"])

    def capture(self, ident: str) -> dict[str, Any]:
        with self.store.change() as data:
            addon = self._ready(data, ident)
            transfer = self._new(data, addon, from_type="pg_dump", from_name=self._attachment_name(data, addon),
                                 to_type="gof3r", to_name="BACKUP")
            transfer["to_url"] = f"{self.signer.base_url}{self._download_path(transfer['uuid'])}"
            transfer["file"] = str(self.dir / f"{transfer['uuid']}.dump")
            self._log(transfer, f"backup of {transfer['from_name']} ({addon['name']}) queued")
            rendered = self.render(transfer)
        self._run(self._backup, transfer["uuid"], dict(addon["database"]))
        return rendered

    def restore(self, ident: str, body: dict[str, Any]) -> dict[str, Any]:
        url = body.get("backup_url")
        if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https"):
            raise invalid("backup_url is required: the http(s) URL of a backup (pg:backups public-url gives one).")
        if body.get("extensions"):
            raise invalid("The sandbox does not pre-install extensions; leave extensions out.")
        with self.store.change() as data:
            addon = self._ready(data, ident)
            if self.busy(addon["id"]):
                raise ApiError(409, "conflict", f"A restore into {addon['name']} is already running.")
            source = self._own_backup(data, url)
            transfer = self._new(data, addon, from_type="gof3r", from_url=url,
                                 from_name=f"b{source['num']:03d}" if source else "BACKUP",
                                 to_type="pg_restore", to_name=self._attachment_name(data, addon))
            self._log(transfer, f"restore into {transfer['to_name']} ({addon['name']}) queued")
            rendered = self.render(transfer)
        self._run(self._restore, transfer["uuid"], dict(addon["database"]), url)
        return rendered

    def _ready(self, data: dict[str, Any], ident: str) -> dict[str, Any]:
        addon = self.addons.find(data, ident)
        if addon["state"] != "provisioned" or not addon.get("database"):
            raise ApiError(404, "not_found", f"{addon['name']} is {addon['state']}, not available yet.")
        return addon

    def _own_backup(self, data: dict[str, Any], url: str) -> dict[str, Any] | None:
        found = re.fullmatch(re.escape(self.signer.base_url) + r"/sandbox/backups/([0-9a-f-]{36})\.dump(\?.*)?", url)
        return data["transfers"].get(found[1]) if found else None

    def _run(self, target: Any, *args: Any) -> None:
        thread = threading.Thread(target=self._guarded, args=(target, *args), name="transfer", daemon=True)
        with self._guard:
            self._threads.add(thread)
        thread.start()

    def _guarded(self, target: Any, *args: Any) -> None:
        try:
            target(*args)
        finally:
            with self._guard:
                self._threads.discard(threading.current_thread())

    def _update(self, uuid: str, **fields: Any) -> dict[str, Any]:
        with self.store.change() as data:
            transfer = data["transfers"][uuid]
            transfer.update(fields, updated_at=now())
            return transfer

    def _log(self, transfer: dict[str, Any], message: str) -> None:
        transfer["logs"].append({"created_at": now(), "message": message})

    def _finish(self, transfer: dict[str, Any], ok: bool, message: str) -> None:
        self._log(transfer, message)
        transfer.update(succeeded=ok, finished_at=now(), updated_at=now())

    def _tool(self, argv: Sequence[str], database: dict[str, Any], uuid: str, watch: Path | None,
              inputs: tuple[str, ...] = ()) -> tuple[int, str]:
        """Run pg_dump or pg_restore with the password in PGPASSWORD; (exit status, stderr)."""
        env = {k: os.environ[k] for k in TOOL_ENV if k in os.environ}
        url, secret = libpq(database["url"])
        env.update(secret)
        stderr_path = self.dir / f"{uuid}.stderr"
        with open(stderr_path, "w+b") as err:
            proc = subprocess.Popen([*argv, "--dbname", url, *inputs], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=err, env=env)
            with self._guard:
                self._procs.add(proc)
            try:
                while True:
                    try:
                        status = proc.wait(0.2)
                        break
                    except subprocess.TimeoutExpired:
                        if watch is not None and watch.exists():
                            self._update(uuid, processed_bytes=watch.stat().st_size)
            finally:
                with self._guard:
                    self._procs.discard(proc)
            err.seek(0)
            text = err.read().decode("utf-8", "replace").strip()
        stderr_path.unlink(missing_ok=True)
        return status, text

    def _backup(self, uuid: str, database: dict[str, Any]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        final = self.dir / f"{uuid}.dump"
        partial = self.dir / f"{uuid}.dump.partial"
        try:
            source_bytes = self.addons.databases.stats(database)["bytes"]
        except Exception as exc:  # reported in the transfer's logs
            self._end(uuid, False, f"cannot reach the database: {exc}")
            return
        self._update(uuid, started_at=now(), source_bytes=source_bytes)
        status, errors = self._tool(["pg_dump", "--format=custom", "--no-owner", "--no-acl", "--file", str(partial)],
                                    database, uuid, partial)
        if status != 0 or self._stopping.is_set():
            partial.unlink(missing_ok=True)
            self._end(uuid, False, f"pg_dump failed (exit {status}): {errors or 'stopped'}")
            return
        partial.rename(final)
        os.chmod(final, 0o600)
        self._end(uuid, True, f"backup done: {final.stat().st_size} bytes", processed_bytes=final.stat().st_size)

    def _restore(self, uuid: str, database: dict[str, Any], url: str) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        download = self.dir / f"{uuid}.download"
        self._update(uuid, started_at=now())
        try:
            fetched = self._download(url, download, uuid)
        except (requests.RequestException, OSError, ApiError) as exc:
            download.unlink(missing_ok=True)
            self._end(uuid, False, f"cannot download the backup: {exc}")
            return
        try:
            status, errors = self._tool(["pg_restore", "--clean", "--if-exists", "--no-owner", "--no-acl"],
                                        database, uuid, None, (str(download),))
        finally:
            download.unlink(missing_ok=True)
        ignored = re.search(r"errors ignored on restore: (\d+)", errors)
        if status != 0 or self._stopping.is_set():
            self._end(uuid, False, f"pg_restore failed (exit {status}): {errors[-4000:] or 'stopped'}",
                      warnings=int(ignored[1]) if ignored else 0, processed_bytes=fetched)
            return
        self._end(uuid, True, f"restore done: {fetched} bytes of backup restored", processed_bytes=fetched)

    def _download(self, url: str, into: Path, uuid: str) -> int:
        own = re.fullmatch(re.escape(self.signer.base_url) + r"(/sandbox/backups/[0-9a-f-]{36}\.dump)", url)
        if own:
            # A backup's to_url: the Data API reads its own storage, as Heroku's does.
            url = self.signer.url(own[1], PUBLIC_URL_TTL)[0]
        got = 0
        with requests.get(url, stream=True, timeout=30) as answer:
            if answer.status_code != 200:
                raise OSError(f"GET {urlsplit(url).path} answered {answer.status_code}")
            self._update(uuid, source_bytes=int(answer.headers.get("Content-Length") or 0))
            with open(into, "wb") as out:
                for chunk in answer.iter_content(1 << 20):
                    out.write(chunk)
                    got += len(chunk)
        return got

    def _end(self, uuid: str, ok: bool, message: str, **fields: Any) -> None:
        with self.store.change() as data:
            transfer = data["transfers"][uuid]
            transfer.update(fields)
            self._finish(transfer, ok, message)
