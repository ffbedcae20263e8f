"""`heroku-postgresql` add-ons and add-on attachments, backed by real databases.

An add-on is created with a database and one attachment: `DATABASE` (so `DATABASE_URL`) when the
app has none yet, else `HEROKU_POSTGRESQL_<COLOR>`, or the name asked for in `attachment.name`.
Attaching, detaching and promoting (attaching another add-on as `DATABASE`) make releases, as on
Heroku; a promotion keeps the old database attached under another name.

Rollback add-ons (`config: {"rollback": "DATABASE_URL", "to": "<time>"}`) are accepted only on
standard, premium, private and shield plans, from a database on such a plan, for a time between
the earliest recoverable moment and now; anything else is refused with 422 before anything is
made. They are `provisioning` while the database is being recovered, then `provisioned` and
attached, like Heroku's.
"""

from __future__ import annotations

import logging
import random
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from backout_sandbox import resources
from backout_sandbox.core.errors import SandboxError
from backout_sandbox.core.store import new_id, now
from backout_sandbox.databases import Databases, is_pitr_plan
from backout_sandbox.platform import Platform
from backout_sandbox.routing import ApiError, invalid, not_found

log = logging.getLogger(__name__)

SERVICE = "heroku-postgresql"
DEFAULT_PLAN = "essential-0"
PLAN = re.compile(r"^(essential-[0-2]|mini|basic|hobby-dev|hobby-basic|(standard|premium|private|shield)-\d{1,2})$")
ATTACHMENT_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")
ADDON_NAME = re.compile(r"^[a-zA-Z][A-Za-z0-9_-]+$")
COLORS = ("AMBER", "AQUA", "BLACK", "BLUE", "BRONZE", "BROWN", "CHARCOAL", "COBALT", "COPPER", "CRIMSON", "CYAN",
          "GOLD", "GRAY", "GREEN", "IVORY", "JADE", "LIME", "MAGENTA", "MAROON", "NAVY", "OLIVE", "ONYX", "ORANGE",
          "PINK", "PUCE", "PURPLE", "RED", "ROSE", "SILVER", "TEAL", "VIOLET", "WHITE", "YELLOW")
WORDS = ("acute", "angular", "clear", "closed", "concave", "convex", "curved", "cubic", "deep", "flat", "fluffy",
         "octagonal", "opaque", "parallel", "regular", "round", "shallow", "solid", "spherical", "symmetrical")
_DURATION = re.compile(r"(\d+)\s*(day|hour|minute|second)s?", re.I)


class AddOns:
    def __init__(self, platform: Platform, databases: Databases) -> None:
        self.platform = platform
        self.databases = databases
        self._threads: set[threading.Thread] = set()
        self._guard = threading.Lock()

    def start(self) -> None:
        """After a restart: rollback add-ons whose recovery died with the old process have failed."""
        with self.platform.store.change() as data:
            for addon in data["addons"].values():
                if addon["state"] == "provisioning":
                    addon["state"] = "deprovisioned"
                    addon["error"] = True
                    addon["provision_message"] = "Provisioning was interrupted: the sandbox stopped while it ran."
            pitr = any((a.get("database") or {}).get("cluster") == "pitr" for a in data["addons"].values())
        if pitr:
            # Apps connect to these databases: the cluster must be up on the port their URLs name.
            self.databases.pitr_cluster()

    def stop(self) -> None:
        with self._guard:
            threads = list(self._threads)
        for thread in threads:
            thread.join(60)

    # --- lookups (store lock held) -------------------------------------------------------------

    def find(self, data: dict[str, Any], ident: Any, app: dict[str, Any] | None = None) -> dict[str, Any]:
        """An add-on by id or name (or {"id"} / {"name"}); with `app`, also by one of its attachment
        names or config var names on that app (DATABASE, DATABASE_URL)."""
        if isinstance(ident, dict):
            ident = ident.get("id") or ident.get("name")
        if not isinstance(ident, str) or not ident:
            raise invalid("addon must be an add-on's id or name.")
        addons = data["addons"]
        if ident in addons:
            return addons[ident]
        for addon in addons.values():
            if addon["name"] == ident:
                return addon
        if app is not None:
            wanted = ident[:-4] if ident.endswith("_URL") else ident
            for attachment in data["attachments"].values():
                if attachment["app_id"] == app["id"] and attachment["name"] == wanted:
                    return addons[attachment["addon_id"]]
        raise not_found("add-on")

    def render(self, data: dict[str, Any], addon: dict[str, Any]) -> dict[str, Any]:
        app = data["apps"][addon["app_id"]]
        names = [f"{a['name']}_URL" for a in self._attachments(data, addon_id=addon["id"]) if a["app_id"] == app["id"]]
        return resources.addon(addon, app, sorted(names), None)

    def render_attachment(self, data: dict[str, Any], attachment: dict[str, Any],
                          include: frozenset[str] = frozenset()) -> dict[str, Any]:
        """An attachment; `include` holds what the client asked for with Heroku's `Accept-Inclusion`
        header beyond the schema: `addon:plan` (the add-on's plan) and `config_vars`."""
        addon = data["addons"][attachment["addon_id"]]
        rendered = resources.attachment(attachment, addon, data["apps"][addon["app_id"]],
                                        data["apps"][attachment["app_id"]], None)
        if "addon:plan" in include:
            rendered["addon"]["plan"] = resources.plan(addon["plan"])
        if "config_vars" in include:
            rendered["config_vars"] = [f"{attachment['name']}_URL"]
        return rendered

    def _attachments(self, data: dict[str, Any], app_id: str | None = None, addon_id: str | None = None) -> list[dict[str, Any]]:
        return sorted((a for a in data["attachments"].values()
                       if (app_id is None or a["app_id"] == app_id) and (addon_id is None or a["addon_id"] == addon_id)),
                      key=lambda a: a["created_at"] + a["name"])

    # --- add-ons -------------------------------------------------------------------------------

    def create(self, app_ident: str, body: dict[str, Any]) -> dict[str, Any]:
        plan = _plan(body.get("plan"))
        config = body.get("config") or {}
        if not isinstance(config, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in config.items()):
            raise invalid("config must be an object of strings, e.g. {\"rollback\": \"DATABASE_URL\", \"to\": \"...\"}.")
        unsupported = set(config) - {"rollback", "to", "by"}
        if unsupported:
            raise invalid(f"The sandbox does not support the config option(s) {', '.join(sorted(unsupported))}; "
                          "it supports rollback with to or by.")
        attachment = body.get("attachment") or {}
        wanted = attachment.get("name") if isinstance(attachment, dict) else None
        if wanted is not None and (not isinstance(wanted, str) or not ATTACHMENT_NAME.match(wanted)):
            raise invalid("attachment.name must start with a letter and hold only uppercase letters, digits and underscores.")
        name = body.get("name")
        if name is not None and (not isinstance(name, str) or not ADDON_NAME.match(name)):
            raise invalid("name must start with a letter and hold only letters, digits, dashes and underscores.")
        pitr = is_pitr_plan(plan.split(":")[1])
        with self.platform.store.lock:
            data = self.platform.store.data
            app = self.platform.find_app(data, app_ident)
            if name and any(a["name"] == name for a in data["addons"].values()):
                raise invalid(f"Name {name} is already taken by another add-on.")
            self._attachment_name(data, app["id"], wanted)
            source = self._rollback_source(data, app, plan, config) if "rollback" in config else None
        when = self._rollback_time(config) if source else None
        if source is None:
            record = self.databases.create(pitr)
        with self.platform.change() as (data, after):
            if app["id"] not in data["apps"]:
                if source is None:
                    after.append(lambda: self.databases.drop(record))
                raise not_found("app")
            stamp = now()
            taken = {a["name"] for a in data["addons"].values()}
            addon = {"id": new_id(), "name": name if name and name not in taken else _addon_name(taken),
                     "app_id": app["id"], "plan": plan, "created_at": stamp, "updated_at": stamp,
                     "state": "provisioning" if source else "provisioned", "database": None,
                     "provision_message": ""}
            data["addons"][addon["id"]] = addon
            if source is None:
                addon["database"] = record
                addon["provision_message"] = "Database has been created and is available."
                self._attach(data, after, app, addon, self._attachment_name(data, app["id"], wanted))
            else:
                assert when is not None  # a rollback's time was read with its source
                addon["provision_message"] = (f"Database is being rolled back to {when.isoformat()} "
                                              f"(heroku addons:wait or the Data API's wait_status tell when done).")
                after.append(lambda: self._start_rollback(addon["id"], source["database"], when, wanted))
            rendered = self.render(data, addon)
            after.append(lambda: self.platform.webhooks.emit(app["id"], "api:addon", "create", rendered))
            return rendered

    def _rollback_source(self, data: dict[str, Any], app: dict[str, Any], plan: str, config: dict[str, str]) -> dict[str, Any]:
        if not is_pitr_plan(plan.split(":")[1]):
            raise invalid(f"Rollback is not supported on {plan}: choose a standard, premium, private or shield plan.")
        if ("to" in config) == ("by" in config):
            raise invalid("A rollback needs exactly one of to (a time, e.g. 2024-05-01T12:00:00Z) "
                          "or by (an interval back from now, e.g. \"3 hours 15 minutes\").")
        try:
            source = self.find(data, config["rollback"], app)
        except ApiError:
            raise invalid(f"Cannot roll back {config['rollback']}: no such database on {app['name']}.") from None
        if source["state"] != "provisioned" or not is_pitr_plan(source["plan"].split(":")[1]):
            raise invalid(f"Cannot roll back {source['name']}: rollback needs a provisioned database on a "
                          "standard, premium, private or shield plan.")
        return source

    def _rollback_time(self, config: dict[str, str]) -> datetime:
        current = datetime.now(timezone.utc)
        if "by" in config:
            parts = _DURATION.findall(config["by"])
            if not parts or _DURATION.sub("", config["by"]).strip(" ,and"):
                raise invalid(f"by {config['by']!r} is not an interval such as \"3 days 7 hours 22 minutes\".")
            when = current - sum((timedelta(**{unit.lower() + "s": int(n)}) for n, unit in parts), timedelta())
        else:
            try:
                when = datetime.fromisoformat(config["to"].replace("Z", "+00:00"))
            except ValueError:
                raise invalid(f"to {config['to']!r} is not a time; use ISO 8601, e.g. 2024-05-01T12:00:00Z.") from None
            if when.tzinfo is None:
                when = when.replace(tzinfo=timezone.utc)
        try:
            earliest = self.databases.earliest_recoverable()
        except SandboxError as exc:
            raise ApiError(503, "service_unavailable", f"Rollback is unavailable: {exc}") from None
        if not earliest <= when <= current:
            raise invalid(f"Cannot roll back to {when.isoformat()}: the time must be between "
                          f"{earliest.isoformat()} and now ({current.isoformat()}).")
        return when

    def _start_rollback(self, addon_id: str, source: dict[str, str], when: datetime, wanted: str | None) -> None:
        thread = threading.Thread(target=self._provision_rollback, args=(addon_id, source, when, wanted),
                                  name=f"rollback {addon_id[:8]}", daemon=True)
        with self._guard:
            self._threads.add(thread)
        thread.start()

    def _provision_rollback(self, addon_id: str, source: dict[str, str], when: datetime, wanted: str | None) -> None:
        try:
            try:
                record = self.databases.rollback(source, when)
            except Exception as exc:  # the add-on reports it: wait_status says error
                log.warning("rollback add-on %s failed: %s", addon_id, exc)
                with self.platform.change() as (data, _):
                    addon = data["addons"].get(addon_id)
                    if addon:
                        addon.update(state="deprovisioned", error=True, updated_at=now(),
                                     provision_message=f"Rollback failed: {exc}")
                return
            with self.platform.change() as (data, after):
                addon = data["addons"].get(addon_id)
                if addon is None or addon["app_id"] not in data["apps"]:
                    after.append(lambda: self.databases.drop(record))
                    return
                addon.update(database=record, state="provisioned", updated_at=now(),
                             provision_message=f"Database rolled back to {when.isoformat()} and available.")
                app = data["apps"][addon["app_id"]]
                self._attach(data, after, app, addon, self._attachment_name(data, app["id"], wanted, strict=False))
                rendered = self.render(data, addon)
                after.append(lambda: self.platform.webhooks.emit(app["id"], "api:addon", "update", rendered))
        finally:
            with self._guard:
                self._threads.discard(threading.current_thread())

    def destroy(self, app_ident: str, ident: str) -> dict[str, Any]:
        with self.platform.change() as (data, after):
            app = self.platform.find_app(data, app_ident)
            addon = self.find(data, ident, app)
            if addon["app_id"] != app["id"]:
                raise not_found("add-on")
            rendered = self._destroy(data, after, addon)
            return rendered

    def _destroy(self, data: dict[str, Any], after: list[Callable[[], None]], addon: dict[str, Any]) -> dict[str, Any]:
        for attachment in self._attachments(data, addon_id=addon["id"]):
            self._detach(data, after, attachment)
        addon.update(state="deprovisioned", updated_at=now())
        rendered = self.render(data, addon)
        del data["addons"][addon["id"]]
        if addon.get("database"):
            after.append(lambda: self.databases.drop(addon["database"]))
        after.append(lambda: self.platform.webhooks.emit(addon["app_id"], "api:addon", "destroy", rendered))
        return rendered

    def destroy_app(self, app_ident: str) -> dict[str, Any]:
        """Delete an app: its add-ons are destroyed (their databases dropped), its dynos stopped."""
        with self.platform.change() as (data, after):
            app = self.platform.find_app(data, app_ident)
            rendered = self.platform.render_app(data, app)
            for addon in [a for a in data["addons"].values() if a["app_id"] == app["id"]]:
                self._destroy(data, after, addon)
            for attachment in self._attachments(data, app_id=app["id"]):
                del data["attachments"][attachment["id"]]
            self.platform.delete_app(data, after, app)
            return rendered

    def drop_all(self) -> None:
        """Drop every add-on database (the sandbox is being thrown away)."""
        with self.platform.store.lock:
            records = [a["database"] for a in self.platform.store.data["addons"].values() if a.get("database")]

        def drop(record: dict[str, str]) -> None:
            try:
                self.databases.drop(record)
            except Exception as exc:  # keep dropping the others
                log.warning("could not drop sandbox database %s: %s", record.get("name"), exc)

        # Each DROP DATABASE waits for a checkpoint; side by side they share one.
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(drop, records))

    # --- attachments ---------------------------------------------------------------------------

    def _attachment_name(self, data: dict[str, Any], app_id: str, wanted: str | None, strict: bool = True) -> str:
        names = {a["name"] for a in self._attachments(data, app_id=app_id)}
        if wanted and wanted not in names:
            return wanted
        if wanted and strict:
            raise invalid(f"{wanted} is already attached to this app; choose another attachment name.")
        if "DATABASE" not in names:
            return "DATABASE"
        free = [c for c in COLORS if f"HEROKU_POSTGRESQL_{c}" not in names]
        return f"HEROKU_POSTGRESQL_{random.choice(free)}"

    def _attach(self, data: dict[str, Any], after: list[Callable[[], None]], app: dict[str, Any],
                addon: dict[str, Any], name: str) -> dict[str, Any]:
        stamp = now()
        attachment = {"id": new_id(), "addon_id": addon["id"], "app_id": app["id"], "name": name,
                      "created_at": stamp, "updated_at": stamp}
        data["attachments"][attachment["id"]] = attachment
        platform = self.platform
        config = platform.config(data, app["id"])
        config[f"{name}_URL"] = addon["database"]["url"]
        addon_vars = sorted(set(platform.basis_addon_vars(data, app["id"])) | {f"{name}_URL"})
        platform._add_release(data, after, app, slug_id=platform.basis(data, app["id"]).get("slug_id"), config=config,
                              description=f"Attach {name} (@ref:{addon['name']})", addon_vars=addon_vars,
                              by_addon=True)
        rendered = self.render_attachment(data, attachment)
        after.append(lambda: platform.webhooks.emit(app["id"], "api:addon-attachment", "create", rendered))
        return attachment

    def _detach(self, data: dict[str, Any], after: list[Callable[[], None]], attachment: dict[str, Any]) -> dict[str, Any]:
        platform = self.platform
        app = data["apps"][attachment["app_id"]]
        addon = data["addons"][attachment["addon_id"]]
        rendered = self.render_attachment(data, attachment)
        del data["attachments"][attachment["id"]]
        variable = f"{attachment['name']}_URL"
        config = {k: v for k, v in platform.config(data, app["id"]).items() if k != variable}
        addon_vars = [v for v in platform.basis_addon_vars(data, app["id"]) if v != variable]
        platform._add_release(data, after, app, slug_id=platform.basis(data, app["id"]).get("slug_id"), config=config,
                              description=f"Detach {attachment['name']} (@ref:{addon['name']})",
                              addon_vars=addon_vars, by_addon=True)
        after.append(lambda: platform.webhooks.emit(app["id"], "api:addon-attachment", "destroy", rendered))
        return rendered

    def create_attachment(self, body: dict[str, Any]) -> dict[str, Any]:
        unknown = set(body) - {"addon", "app", "name", "confirm", "namespace", "namespace_config"}
        if unknown:
            raise invalid(f"Unknown attachment fields: {', '.join(sorted(unknown))}.")
        if body.get("namespace"):
            raise invalid("The sandbox does not support attachment namespaces.")
        name = body.get("name")
        if name is not None and (not isinstance(name, str) or not ATTACHMENT_NAME.match(name)):
            raise invalid("name must start with a letter and hold only uppercase letters, digits and underscores.")
        app_ident = body.get("app")
        if isinstance(app_ident, dict):
            app_ident = app_ident.get("id") or app_ident.get("name")
        if not isinstance(app_ident, str) or "addon" not in body:
            raise invalid("addon and app are required: the add-on's id or name and the app's id or name.")
        with self.platform.change() as (data, after):
            app = self.platform.find_app(data, app_ident)
            addon = self.find(data, body["addon"])
            if addon["state"] != "provisioned":
                raise invalid(f"{addon['name']} is {addon['state']}; wait until it is provisioned.")
            holder = next((a for a in self._attachments(data, app_id=app["id"]) if a["name"] == name), None) if name else None
            if holder and holder["addon_id"] == addon["id"]:
                raise invalid(f"{addon['name']} is already attached to {app['name']} as {name}.")
            if holder:
                # Promotion: the add-on that had this name keeps an attachment under another one.
                old = data["addons"][holder["addon_id"]]
                if not any(a["addon_id"] == old["id"] and a is not holder for a in self._attachments(data, app_id=app["id"])):
                    self._attach(data, after, app, old, self._attachment_name(data, app["id"], None))
                self._detach(data, after, holder)
            attachment = self._attach(data, after, app, addon, name or self._attachment_name(data, app["id"], None))
            return self.render_attachment(data, attachment)

    def delete_attachment(self, ident: str) -> dict[str, Any]:
        with self.platform.change() as (data, after):
            attachment = data["attachments"].get(ident.lower())
            if attachment is None:
                raise not_found("add-on attachment")
            return self._detach(data, after, attachment)

    def list_attachments(self, app_ident: str | None = None, addon_ident: str | None = None,
                         include: frozenset[str] = frozenset()) -> list[dict[str, Any]]:
        with self.platform.store.lock:
            data = self.platform.store.data
            app_id = self.platform.find_app(data, app_ident)["id"] if app_ident else None
            addon_id = self.find(data, addon_ident)["id"] if addon_ident else None
            return [self.render_attachment(data, a, include) for a in self._attachments(data, app_id, addon_id)]

    def attachment_info(self, ident: str, app_ident: str | None = None,
                        include: frozenset[str] = frozenset()) -> dict[str, Any]:
        with self.platform.store.lock:
            data = self.platform.store.data
            app = self.platform.find_app(data, app_ident) if app_ident else None
            for attachment in self._attachments(data, app["id"] if app else None):
                if attachment["id"] == ident.lower() or (app is not None and attachment["name"] == ident):
                    return self.render_attachment(data, attachment, include)
        raise not_found("add-on attachment")

    def resolve_attachments(self, body: dict[str, Any], include: frozenset[str] = frozenset()) -> list[dict[str, Any]]:
        """Heroku's attachment resolver: the attachments an identifier names (an id, a name on the
        app, or `app::name`), for the CLI commands that take a database argument."""
        ident, app_ident = body.get("addon_attachment"), body.get("app")
        if not isinstance(ident, str) or not ident or (app_ident is not None and not isinstance(app_ident, str)):
            raise invalid("addon_attachment is required: an attachment's id or name (DATABASE, or app::DATABASE).")
        if "::" in ident:
            app_ident, _, ident = ident.partition("::")
        service = body.get("addon_service")
        with self.platform.store.lock:
            data = self.platform.store.data
            app = self.platform.find_app(data, app_ident) if app_ident else None
            found = [a for a in self._attachments(data, app["id"] if app else None)
                     if ident in (a["id"], a["name"]) and service in (None, SERVICE)]
            if not found:
                raise not_found("add-on attachment")
            return [self.render_attachment(data, a, include) for a in found]


def _plan(plan: Any) -> str:
    """heroku-postgresql:<plan>, from a plan name, `heroku-postgresql` alone, or a plan id, given as
    a string or as the Heroku CLI sends it: `{"name": ...}` (or `{"id": ...}`)."""
    if isinstance(plan, dict):
        plan = plan.get("name") or plan.get("id")
    if not isinstance(plan, str) or not plan:
        raise invalid("plan is required, e.g. heroku-postgresql:essential-0.")
    if plan == SERVICE:
        return f"{SERVICE}:{DEFAULT_PLAN}"
    service, _, name = plan.partition(":")
    if service == SERVICE and PLAN.match(name):
        return plan
    if service != SERVICE and not name:
        for candidate in [f"{SERVICE}:{p}" for p in ("essential-0", "essential-1", "essential-2", "mini", "basic")] + \
                [f"{SERVICE}:{tier}-{n}" for tier in ("standard", "premium", "private", "shield") for n in range(11)]:
            if resources.stable_id("plan", candidate) == plan:
                return candidate
    if service != SERVICE:
        raise invalid(f"Couldn't find either the add-on service or the add-on plan of {plan!r}: the sandbox "
                      f"provides {SERVICE} only.")
    raise invalid(f"Couldn't find the add-on plan {plan!r}; use essential-0..2, mini, basic, or "
                  "standard-/premium-/private-/shield-N.")


def _addon_name(taken: set[str]) -> str:
    while True:
        name = f"postgresql-{random.choice(WORDS)}-{random.randint(10000, 99999)}"
        if name not in taken:
            return name
