"""The local Heroku's behaviour: apps, slugs, releases and their release phase, config vars,
formation, dynos and app webhooks. Add-ons live in `addons`, the Data API in `transfers`.

How releases work here, as on Heroku:
- Every release has a version, a slug (none for the first, "Initial release"), its config vars
  and a status. The app's current release is its newest `succeeded` one.
- A release whose slug has a `release` process type runs that command first (the release phase):
  the release is `pending` meanwhile, then `succeeded` (it becomes current and the dynos restart
  on it) or `failed` (the app stays on its current release). Release phases of one app run one
  at a time, and no lock is held while they run, so a release command may call the API itself.
- Config var changes, add-on attachments and rollbacks make releases too. A new release starts
  from the newest release that has not failed, so a failed config change leaves no trace.
- A rollback release takes the target's slug and config vars, except the config vars that
  add-on attachments set, which stay as they are now (Heroku does not roll back add-ons).
"""

from __future__ import annotations

import functools
import random
import re
import secrets
import subprocess
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from backout_sandbox import processes, resources
from backout_sandbox.app_router import AppRouter
from backout_sandbox.core.store import new_id, now
from backout_sandbox.dynos import Backoff, DynoManager, DynoSpec
from backout_sandbox.faults import Faults
from backout_sandbox.log_sessions import LogSessions
from backout_sandbox.routing import ApiError, invalid, not_found
from backout_sandbox.signed_urls import Signer
from backout_sandbox.slugs import BadSlug, SlugFiles
from backout_sandbox.store import Store
from backout_sandbox.webhooks import Webhooks

APP_NAME = re.compile(r"^[a-z][a-z0-9-]{1,28}[a-z0-9]$")
PROCESS_TYPE = re.compile(r"^[-\w]{1,128}$")
CONFIG_KEY = re.compile(r"^\w+$")
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)
MAX_QUANTITY = 100
OUTPUT_TTL = 24 * 3600
WORDS = ("amber", "brisk", "calm", "dapper", "eager", "fathom", "gentle", "hidden", "ivory", "jolly",
         "kind", "lively", "mellow", "nimble", "polar", "quiet", "rapid", "serene", "tidal", "vast")
NOUNS = ("harbor", "meadow", "river", "summit", "canyon", "forest", "island", "valley", "glacier", "prairie")


class Platform:
    def __init__(self, store: Store, work_dir: Path, signer: Signer, faults: Faults, *,
                 release_timeout: float = 3600.0, backoff: Backoff | None = None,
                 stop_timeout: float = 10.0, boot_timeout: float = 60.0) -> None:
        self.store = store
        self.work_dir = work_dir
        self.signer = signer
        self.faults = faults
        self.release_timeout = release_timeout
        self.slugs = SlugFiles(work_dir / "slugs")
        self.webhooks = Webhooks(self._subscribers, resources.OWNER)
        self.dynos = DynoManager(work_dir / "logs", self._dyno_changed, backoff, stop_timeout, boot_timeout)
        self.routers: dict[str, AppRouter] = {}
        self._guard = threading.Lock()  # guards the dicts below
        self._app_locks: dict[str, tuple[threading.Lock, threading.Lock]] = {}  # release phase, activation
        self._release_threads: set[threading.Thread] = set()
        self._release_procs: set[subprocess.Popen[bytes]] = set()
        self._stopping = threading.Event()
        self.log_sessions = LogSessions(signer, self.dynos.logs_dir, self._stopping)

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Bring back what the state describes: a router per app and the dynos of its current release."""
        with self.store.change() as data:
            for app_id, releases in data["releases"].items():
                for release in releases:
                    if release["status"] == "pending":
                        # Its release phase died with the previous sandbox process.
                        release["status"] = "failed"
                        release["updated_at"] = now()
                        self._output_path(release["id"]).parent.mkdir(parents=True, exist_ok=True)
                        with open(self._output_path(release["id"]), "a") as out:
                            out.write("Release phase interrupted: the sandbox stopped while it ran.\n")
            apps = list(data["apps"].values())
        for app in apps:
            self._start_router(app["id"])
            self._activate(app["id"], restart=False)

    def stop(self) -> None:
        self._stopping.set()
        with self._guard:
            procs = list(self._release_procs)
            threads = list(self._release_threads)
        for proc in procs:
            processes.terminate(proc, 5)
        for thread in threads:
            thread.join(10)
        self.dynos.stop_all()
        for router in list(self.routers.values()):
            router.stop()
        self.webhooks.stop()

    def _locks(self, app_id: str) -> tuple[threading.Lock, threading.Lock]:
        with self._guard:
            return self._app_locks.setdefault(app_id, (threading.Lock(), threading.Lock()))

    @contextmanager
    def change(self) -> Iterator[tuple[dict[str, Any], list[Callable[[], None]]]]:
        """The state, locked, and a list of actions to run once the lock is released and the state
        saved: restarting dynos, starting release phases, sending webhooks."""
        after: list[Callable[[], None]] = []
        with self.store.change() as data:
            yield data, after
        for action in after:
            action()

    # --- lookups (call with the store lock held) -----------------------------------------------

    def find_app(self, data: dict[str, Any], ident: str) -> dict[str, Any]:
        apps = data["apps"]
        if ident in apps:
            return apps[ident]
        for app in apps.values():
            if app["name"] == ident:
                return app
        raise not_found("app")

    def releases_of(self, data: dict[str, Any], app_id: str) -> list[dict[str, Any]]:
        return data["releases"].setdefault(app_id, [])

    def find_release(self, data: dict[str, Any], app_id: str, ident: str) -> dict[str, Any]:
        releases = self.releases_of(data, app_id)
        digits = ident[1:] if ident[:1] in ("v", "V") else ident
        for release in releases:
            if release["id"] == ident.lower() or (digits.isdigit() and release["version"] == int(digits)):
                return release
        raise not_found("release")

    def current(self, data: dict[str, Any], app_id: str) -> dict[str, Any] | None:
        return next((r for r in reversed(self.releases_of(data, app_id)) if r["status"] == "succeeded"), None)

    def basis(self, data: dict[str, Any], app_id: str) -> dict[str, Any]:
        """The release a new one starts from: the newest that has not failed."""
        return next(r for r in reversed(self.releases_of(data, app_id)) if r["status"] != "failed")

    def config(self, data: dict[str, Any], app_id: str) -> dict[str, str]:
        return dict(self.basis(data, app_id)["config"])

    # --- rendering -------------------------------------------------------------------------------

    def render_app(self, data: dict[str, Any], app: dict[str, Any]) -> dict[str, Any]:
        current = self.current(data, app["id"])
        slug = data["slugs"].get(current["slug_id"]) if current and current.get("slug_id") else None
        return resources.app(app, current, slug)

    def render_release(self, data: dict[str, Any], app: dict[str, Any], release: dict[str, Any]) -> dict[str, Any]:
        current = self.current(data, app["id"])
        output = None
        if release.get("has_output"):
            output = self.signer.url(f"/sandbox/releases/{release['id']}/output", OUTPUT_TTL)[0]
        return resources.release(release, app, current is release, output)

    def render_slug(self, slug: dict[str, Any], method: str) -> dict[str, Any]:
        return resources.slug(slug, self.signer.url(f"/sandbox/slugs/{slug['id']}.tgz", 3600)[0], method)

    # --- apps ------------------------------------------------------------------------------------

    def create_app(self, body: dict[str, Any]) -> dict[str, Any]:
        name = body.get("name")
        with self.change() as (data, after):
            taken = {a["name"] for a in data["apps"].values()}
            if name is None:
                name = _random_name(taken)
            elif not isinstance(name, str) or not APP_NAME.match(name):
                raise invalid("Name must start with a letter, end with a letter or digit and can only contain "
                              "lowercase letters, digits, and dashes, 3 to 30 characters.")
            elif name in taken:
                raise invalid("Name is already taken")
            stamp = now()
            app: dict[str, Any] = {"id": new_id(), "name": name, "created_at": stamp, "updated_at": stamp,
                                   "router_port": 0, "web_url": None, "maintenance": False}
            data["apps"][app["id"]] = app
            data["formation"][app["id"]] = {}
            self._add_release(data, after, app, slug_id=None, config={}, description="Initial release")
            after.append(lambda: self._start_router(app["id"]))
        with self.store.lock:
            rendered = self.render_app(self.store.data, app)
        self.webhooks.emit(app["id"], "api:app", "create", rendered)
        return rendered

    def delete_app(self, data: dict[str, Any], after: list[Callable[[], None]], app: dict[str, Any]) -> None:
        """Forget the app (the caller destroys its add-ons first); its dynos and router stop."""
        app_id = app["id"]
        del data["apps"][app_id]
        data["releases"].pop(app_id, None)
        data["formation"].pop(app_id, None)
        for hook_id in [h for h, hook in data["webhooks"].items() if hook["app_id"] == app_id]:
            del data["webhooks"][hook_id]
        router = self.routers.pop(app_id, None)
        after.append(lambda: self.dynos.forget(app_id))
        if router:
            after.append(router.stop)

    def _start_router(self, app_id: str) -> None:
        with self.store.lock:
            app = self.store.data["apps"][app_id]
            port, name = app.get("router_port") or 0, app["name"]
        router = AppRouter(name, lambda: self.dynos.web_ports(app_id), lambda: self.dynos.has_crashed_web(app_id),
                           self.dynos.log(name), port)
        router.start()
        self.routers[app_id] = router
        with self.store.change() as data:
            app = data["apps"][app_id]
            app["router_port"] = router.port
            app["web_url"] = router.web_url

    # --- slugs -----------------------------------------------------------------------------------

    def create_slug(self, app_ident: str, body: dict[str, Any]) -> dict[str, Any]:
        process_types = body.get("process_types")
        if not isinstance(process_types, dict):
            raise invalid("process_types is required: an object mapping process types to commands, "
                          'e.g. {"web": "python -m http.server $PORT"}.')
        for key, value in process_types.items():
            if not PROCESS_TYPE.match(key) or not isinstance(value, str) or not value.strip():
                raise invalid(f"process_types: {key!r} must be a process type name ([-\\w]{{1,128}}) "
                              "mapped to a non-empty command.")
        for key in ("commit", "commit_description", "checksum", "buildpack_provided_description"):
            if body.get(key) is not None and not isinstance(body[key], str):
                raise invalid(f"{key} must be a string or null.")
        if body.get("checksum") and not re.fullmatch(r"SHA256:[0-9a-fA-F]{64}", body["checksum"]):
            raise invalid("checksum must be SHA256:<64 hex digits>.")
        with self.change() as (data, _):
            app = self.find_app(data, app_ident)
            stamp = now()
            slug = {"id": new_id(), "app_id": app["id"], "process_types": dict(process_types),
                    "commit": body.get("commit"), "commit_description": body.get("commit_description"),
                    "checksum": body.get("checksum"),
                    "buildpack_provided_description": body.get("buildpack_provided_description"),
                    "size": None, "created_at": stamp, "updated_at": stamp}
            data["slugs"][slug["id"]] = slug
            return self.render_slug(slug, "put")

    def slug_info(self, app_ident: str, slug_id: str) -> dict[str, Any]:
        with self.store.lock:
            data = self.store.data
            self.find_app(data, app_ident)
            slug = data["slugs"].get(slug_id.lower())
            if slug is None:
                raise not_found("slug")
            return self.render_slug(slug, "get")

    def receive_blob(self, slug_id: str, copy_body: Callable[[Any], int]) -> None:
        with self.store.lock:
            slug = self.store.data["slugs"].get(slug_id)
            if slug is None:
                raise ApiError(404, "NoSuchKey", "The specified key does not exist.")
            checksum = slug.get("checksum")
        try:
            size, digest = self.slugs.receive(slug_id, copy_body, checksum)
        except BadSlug as exc:
            raise ApiError(400, "bad_request", str(exc)) from None
        with self.store.change() as data:
            slug = data["slugs"][slug_id]
            slug["size"], slug["checksum"], slug["updated_at"] = size, digest, now()

    # --- releases --------------------------------------------------------------------------------

    def _add_release(self, data: dict[str, Any], after: list[Callable[[], None]], app: dict[str, Any], *,
                     slug_id: str | None, config: dict[str, str], description: str,
                     addon_vars: list[str] | None = None, by_addon: bool = False) -> dict[str, Any]:
        """Record a new release (inside `change`) and arrange its release phase or its activation.
        A release an add-on makes by changing its config vars (`by_addon`) runs no release phase:
        Heroku marks it succeeded without running the release command."""
        releases = self.releases_of(data, app["id"])
        slug = data["slugs"].get(slug_id) if slug_id and not by_addon else None
        command = slug["process_types"].get("release") if slug else None
        fail = not by_addon and self.faults.take_release_failure(app["name"], app["id"])
        phase = command is not None or fail
        stamp = now()
        release: dict[str, Any] = {
            "id": new_id(), "version": releases[-1]["version"] + 1 if releases else 1, "slug_id": slug_id,
            "config": dict(config), "description": description, "status": "pending" if phase else "succeeded",
            "created_at": stamp, "updated_at": stamp, "has_output": phase,
            "addon_plan_names": sorted({a["plan"] for a in data["addons"].values() if a["app_id"] == app["id"]}),
            "addon_vars": sorted(addon_vars if addon_vars is not None else self.basis_addon_vars(data, app["id"])),
        }
        releases.append(release)
        app["updated_at"] = stamp
        # As Heroku's log shows a release: what changed, then the release, both by the API.
        log = self.dynos.log(app["name"])
        log.write("app[api]", f"{description} by user {resources.OWNER['email']}")
        log.write("app[api]", f"Release v{release['version']} created by user {resources.OWNER['email']}")
        rendered = self.render_release(data, app, release)
        after.append(lambda: self.webhooks.emit(app["id"], "api:release", "create", rendered))
        if phase:
            after.append(lambda: self._start_release_phase(app["id"], release["id"], command, fail))
        else:
            self._sync_formation(data, app["id"])
            after.append(lambda: self._activate(app["id"], restart=True))
        return release

    def basis_addon_vars(self, data: dict[str, Any], app_id: str) -> list[str]:
        releases = self.releases_of(data, app_id)
        return list(self.basis(data, app_id).get("addon_vars", [])) if releases else []

    def create_release(self, app_ident: str, body: dict[str, Any]) -> dict[str, Any]:
        if "release" in body:
            return self.rollback(app_ident, body["release"])
        slug_id = body.get("slug")
        if not isinstance(slug_id, str) or not slug_id:
            raise invalid("slug is required: the id of a slug made with POST /apps/{app}/slugs "
                          '(or "release": <id> to roll back).')
        description = body.get("description")
        if description is not None and not isinstance(description, str):
            raise invalid("description must be a string.")
        with self.change() as (data, after):
            app = self.find_app(data, app_ident)
            slug = data["slugs"].get(slug_id.lower())
            if slug is None:
                raise not_found("slug")
            commit = (slug.get("commit") or "")[:8]
            release = self._add_release(data, after, app, slug_id=slug["id"], config=self.config(data, app["id"]),
                                        description=description or (f"Deploy {commit}" if commit else "Deploy"))
            return self.render_release(data, app, release)

    def rollback(self, app_ident: str, target_id: Any) -> dict[str, Any]:
        if not isinstance(target_id, str) or not UUID.match(target_id):
            raise invalid("release must be the id (a UUID) of the release to roll back to.")
        with self.change() as (data, after):
            app = self.find_app(data, app_ident)
            target = self.find_release(data, app["id"], target_id)
            if target["status"] != "succeeded":
                raise invalid(f"Cannot roll back to v{target['version']}: its status is {target['status']}; "
                              "only a succeeded release can be rolled back to.")
            if not target.get("slug_id"):
                raise invalid(f"Cannot roll back to v{target['version']}: it has no slug.")
            now_vars = self.config(data, app["id"])
            managed_now = set(self.basis_addon_vars(data, app["id"]))
            config = {k: v for k, v in target["config"].items() if k not in set(target.get("addon_vars", []))}
            config.update({k: v for k, v in now_vars.items() if k in managed_now})
            release = self._add_release(data, after, app, slug_id=target["slug_id"], config=config,
                                        description=f"Rollback to v{target['version']}", addon_vars=sorted(managed_now))
            return self.render_release(data, app, release)

    def _start_release_phase(self, app_id: str, release_id: str, command: str | None, fail: bool) -> None:
        thread = threading.Thread(target=self._release_phase, args=(app_id, release_id, command, fail),
                                  name=f"release {release_id[:8]}", daemon=True)
        with self._guard:
            self._release_threads.add(thread)
        thread.start()

    def _output_path(self, release_id: str) -> Path:
        return self.work_dir / "releases" / f"{release_id}.log"

    def release_output(self, release_id: str) -> tuple[Path, Callable[[], bool]]:
        """The release phase's output file and a function telling whether the phase still runs."""
        with self.store.lock:
            for releases in self.store.data["releases"].values():
                for release in releases:
                    if release["id"] == release_id and release.get("has_output"):
                        def running(r: dict[str, Any] = release) -> bool:
                            return r["status"] == "pending"
                        return self._output_path(release_id), running
        raise not_found("release")

    def _release_phase(self, app_id: str, release_id: str, command: str | None, fail: bool) -> None:
        try:
            with self._locks(app_id)[0]:
                ok = self._run_release_phase(app_id, release_id, command, fail)
                with self.change() as (data, after):
                    app = data["apps"].get(app_id)
                    if app is None:
                        return
                    release = self.find_release(data, app_id, release_id)
                    release["status"] = "succeeded" if ok else "failed"
                    release["updated_at"] = now()
                    rendered = self.render_release(data, app, release)
                    after.append(lambda: self.webhooks.emit(app_id, "api:release", "update", rendered,
                                                            {"status": "pending"}))
                    if ok and self.current(data, app_id) is release:
                        self._sync_formation(data, app_id)
                        after.append(lambda: self._activate(app_id, restart=True))
        finally:
            with self._guard:
                self._release_threads.discard(threading.current_thread())

    def _run_release_phase(self, app_id: str, release_id: str, command: str | None, fail: bool) -> bool:
        output = self._output_path(release_id)
        output.parent.mkdir(parents=True, exist_ok=True)
        with self.store.lock:
            data = self.store.data
            app = data["apps"][app_id]
            release = self.find_release(data, app_id, release_id)
            slug = data["slugs"].get(release["slug_id"]) if release.get("slug_id") else None
            env = self._env(app, release, slug)
            cwd = self.slugs.app_dir(slug["id"]) if slug else self.work_dir
            log = self.dynos.log(app["name"])
        with open(output, "ab") as out:
            if fail or self._stopping.is_set():
                message = "Release phase failed: injected by the sandbox's fault injection.\n"
                out.write(message.encode())
                log.write("heroku[release.1]", message)
                return False
            assert command is not None
            log.write("heroku[release.1]", f"Starting process with command `{command}`")
            try:
                proc = processes.spawn(command, cwd, processes.dyno_env(env, {"DYNO": "release.1"}), subprocess.PIPE)
            except OSError as exc:
                out.write(f"cannot start the release command: {exc}\n".encode())
                return False
            with self._guard:
                self._release_procs.add(proc)
            assert proc.stdout is not None
            pump = log.pump(proc.stdout, "app[release.1]", copy=out)
            try:
                status = processes.exit_status(proc.wait(self.release_timeout))
            except subprocess.TimeoutExpired:
                status = processes.terminate(proc, 10)
                log.write("heroku[release.1]", f"Release command timed out after {self.release_timeout:g} seconds")
            finally:
                with self._guard:
                    self._release_procs.discard(proc)
            pump.join(10)
            log.write("heroku[release.1]", f"Process exited with status {status}")
            return status == 0 and not self._stopping.is_set()

    # --- config vars -----------------------------------------------------------------------------

    def update_config(self, app_ident: str, changes: Any) -> dict[str, str]:
        if not isinstance(changes, dict):
            raise invalid("Config var changes must be an object: {\"NAME\": \"value\"}, null deletes one.")
        for key, value in changes.items():
            if not CONFIG_KEY.match(key):
                raise invalid(f"Config var name {key!r} is invalid: use letters, digits and underscores.")
            if value is not None and not isinstance(value, str):
                raise invalid(f"Config var {key} must be a string or null (to delete it).")
        with self.change() as (data, after):
            app = self.find_app(data, app_ident)
            config = self.config(data, app["id"])
            updated = {k: v for k, v in {**config, **changes}.items() if v is not None}
            if updated != config:
                set_names = [k for k, v in changes.items() if v is not None and config.get(k) != v]
                removed = [k for k, v in changes.items() if v is None and k in config]
                self._add_release(data, after, app, slug_id=self.basis(data, app["id"]).get("slug_id"),
                                  config=updated, description=_config_description(set_names, removed))
            return updated

    # --- formation -------------------------------------------------------------------------------

    def _sync_formation(self, data: dict[str, Any], app_id: str) -> None:
        """Match the formation to the current slug's process types: new ones appear (web with one
        dyno, others with none), ones the slug no longer has go."""
        current = self.current(data, app_id)
        slug = data["slugs"].get(current["slug_id"]) if current and current.get("slug_id") else None
        if slug is None:
            return
        formation = data["formation"].setdefault(app_id, {})
        for type_ in list(formation):
            if type_ not in slug["process_types"]:
                del formation[type_]
        for type_ in slug["process_types"]:
            if type_ not in formation:
                stamp = now()
                formation[type_] = {"id": new_id(), "quantity": 1 if type_ == "web" else 0, "size": "Basic",
                                    "created_at": stamp, "updated_at": stamp}

    def formation(self, data: dict[str, Any], app: dict[str, Any]) -> list[dict[str, Any]]:
        current = self.current(data, app["id"])
        slug = data["slugs"].get(current["slug_id"]) if current and current.get("slug_id") else None
        types = slug["process_types"] if slug else {}
        entries = data["formation"].get(app["id"], {})
        return [resources.formation(entry, type_, types.get(type_, ""), app) for type_, entry in sorted(entries.items())]

    def find_formation(self, data: dict[str, Any], app: dict[str, Any], ident: str) -> str:
        for type_, entry in data["formation"].get(app["id"], {}).items():
            if ident in (type_, entry["id"]):
                return type_
        raise not_found("formation")

    def update_formation(self, app_ident: str, updates: Any) -> list[dict[str, Any]]:
        if not isinstance(updates, list) or not updates:
            raise invalid('updates must be a non-empty array: [{"type": "web", "quantity": 1}].')
        with self.change() as (data, after):
            app = self.find_app(data, app_ident)
            planned = []
            for update in updates:
                if not isinstance(update, dict) or not isinstance(update.get("type"), str):
                    raise invalid('Each update needs a "type" (the process type) and a quantity or dyno_size.')
                unknown = set(update) - {"type", "quantity", "size", "dyno_size"}
                if unknown:
                    raise invalid(f"Unknown formation fields: {', '.join(sorted(unknown))}.")
                type_ = self.find_formation(data, app, update["type"])
                current = data["formation"][app["id"]][type_]["quantity"]
                planned.append((type_, _quantity(update, type_, current), _size(update)))
            changed = []
            for type_, quantity, size in planned:
                entry = data["formation"][app["id"]][type_]
                if quantity is not None:
                    entry["quantity"] = quantity
                if size is not None:
                    entry["size"] = size
                entry["updated_at"] = now()
                changed.append(type_)
            after.append(lambda: self._activate(app["id"], restart=False))
            result = [f for f in self.formation(data, app) if f["type"] in changed]
            for item in result:
                after.append(functools.partial(self.webhooks.emit, app["id"], "api:formation", "update", item))
            return result

    # --- dynos -----------------------------------------------------------------------------------

    def _activate(self, app_id: str, restart: bool) -> None:
        """Run the current release's formation: every dyno restarted when `restart`, else only the
        ones that must start or stop."""
        with self._locks(app_id)[1]:
            with self.store.lock:
                data = self.store.data
                app = data["apps"].get(app_id)
                if app is None or self._stopping.is_set():
                    return
                specs = self._dyno_specs(data, app)
                name = app["name"]
            self.dynos.converge(app_id, name, specs, restart)

    def _dyno_specs(self, data: dict[str, Any], app: dict[str, Any]) -> list[DynoSpec]:
        current = self.current(data, app["id"])
        slug = data["slugs"].get(current["slug_id"]) if current and current.get("slug_id") else None
        if current is None or slug is None:
            return []
        env = self._env(app, current, slug)
        cwd = self.slugs.app_dir(slug["id"])
        specs = []
        for type_, entry in sorted(data["formation"].get(app["id"], {}).items()):
            command = slug["process_types"].get(type_)
            if type_ == "release" or not command:
                continue
            for number in range(1, entry["quantity"] + 1):
                specs.append(DynoSpec(f"{type_}.{number}", type_, command, cwd, env, current["id"],
                                      current["version"], entry["size"]))
        return specs

    def _env(self, app: dict[str, Any], release: dict[str, Any], slug: dict[str, Any] | None) -> dict[str, str]:
        """Config vars and dyno metadata (as with `heroku labs:enable runtime-dyno-metadata`). The
        API URLs point dynos at this sandbox unless the app's config says otherwise."""
        env = {"BACKOUT_HEROKU_API_URL": self.signer.base_url, "BACKOUT_HEROKU_DATA_URL": self.signer.base_url}
        env.update(release["config"])
        env.update({
            "HEROKU_APP_ID": app["id"],
            "HEROKU_APP_NAME": app["name"],
            "HEROKU_RELEASE_VERSION": f"v{release['version']}",
            "HEROKU_RELEASE_CREATED_AT": release["created_at"],
            "HEROKU_SLUG_COMMIT": (slug or {}).get("commit") or "",
            "HEROKU_SLUG_DESCRIPTION": (slug or {}).get("commit_description") or "",
        })
        return env

    def list_dynos(self, app_ident: str) -> list[dict[str, Any]]:
        with self.store.lock:
            app = self.find_app(self.store.data, app_ident)
        return [resources.dyno(info, app) for info in self.dynos.dynos(app["id"])]

    def dyno_info(self, app_ident: str, ident: str) -> dict[str, Any]:
        for dyno in self.list_dynos(app_ident):
            if ident in (dyno["name"], dyno["id"]):
                return dyno
        raise not_found("dyno")

    def restart(self, app_ident: str, dyno: str | None = None, type_: str | None = None) -> None:
        with self.store.lock:
            app = self.find_app(self.store.data, app_ident)
        if not self.dynos.restart(app["id"], app["name"], dyno, type_) and (dyno or type_):
            raise not_found("dyno" if dyno else "formation")

    def _dyno_changed(self, app_id: str, info: dict[str, Any]) -> None:
        with self.store.lock:
            app = self.store.data["apps"].get(app_id)
            if app is None:
                return
            rendered = resources.dyno(info, app)
        self.webhooks.emit(app_id, "api:dyno", "create" if info["state"] == "starting" else "update", rendered)

    # --- app webhooks ----------------------------------------------------------------------------

    def _subscribers(self, app_id: str, entity: str) -> list[dict[str, Any]]:
        with self.store.lock:
            return [dict(h) for h in self.store.data["webhooks"].values()
                    if h["app_id"] == app_id and entity in h["include"]]

    def create_webhook(self, app_ident: str, body: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
        """The new webhook, and the secret Heroku made up for it when none was given."""
        include, level, url = body.get("include"), body.get("level"), body.get("url")
        unknown = set(body) - {"include", "level", "url", "secret", "authorization"}
        if unknown:
            raise invalid(f"Unknown webhook fields: {', '.join(sorted(unknown))}.")
        _check_webhook(include, level, url, body.get("secret"), body.get("authorization"))
        made_up = None if body.get("secret") else secrets.token_hex(30)
        with self.change() as (data, _):
            app = self.find_app(data, app_ident)
            stamp = now()
            hook = {"id": new_id(), "app_id": app["id"], "include": list(include or ()), "level": level, "url": url,
                    "secret": body.get("secret") or made_up, "authorization": body.get("authorization"),
                    "created_at": stamp, "updated_at": stamp}
            data["webhooks"][hook["id"]] = hook
            return resources.webhook(hook, app), made_up

    def find_webhook(self, data: dict[str, Any], app: dict[str, Any], ident: str) -> dict[str, Any]:
        hook = data["webhooks"].get(ident.lower())
        if hook is None or hook["app_id"] != app["id"]:
            raise not_found("webhook")
        return hook

    def update_webhook(self, app_ident: str, ident: str, body: dict[str, Any]) -> dict[str, Any]:
        with self.change() as (data, _):
            app = self.find_app(data, app_ident)
            hook = self.find_webhook(data, app, ident)
            merged = {**hook, **{k: v for k, v in body.items() if k in ("include", "level", "url", "secret", "authorization")}}
            _check_webhook(merged["include"], merged["level"], merged["url"], merged.get("secret"), merged.get("authorization"))
            hook.update(merged, updated_at=now())
            return resources.webhook(hook, app)


def _random_name(taken: set[str]) -> str:
    while True:
        name = f"{random.choice(WORDS)}-{random.choice(NOUNS)}-{random.randint(10000, 99999)}"
        if name not in taken:
            return name


def _config_description(set_names: list[str], removed: list[str]) -> str:
    if set_names and removed:
        return f"Set {', '.join(set_names)} and remove {', '.join(removed)} config vars"
    if set_names:
        return f"Set {', '.join(set_names)} config vars"
    return f"Remove {', '.join(removed)} config vars"


def _quantity(update: dict[str, Any], type_: str, current: int) -> int | None:
    """The new quantity: a number, or as the Heroku CLI's `ps:scale` sends it, a string that is
    absolute ("2") or relative to the current quantity ("+1", "-1")."""
    quantity = update.get("quantity")
    if quantity is None:
        return None
    if isinstance(quantity, str) and re.fullmatch(r"[+-]?\d{1,4}", quantity):
        quantity = current + int(quantity) if quantity[0] in "+-" else int(quantity)
    if isinstance(quantity, bool) or not isinstance(quantity, int) or not 0 <= quantity <= MAX_QUANTITY:
        raise invalid(f"quantity of {type_} must be a whole number from 0 to {MAX_QUANTITY}.")
    if type_ == "release" and quantity:
        raise invalid("The release process type runs in the release phase; it cannot be scaled.")
    return quantity


def _size(update: dict[str, Any]) -> str | None:
    size = update.get("size")
    if isinstance(update.get("dyno_size"), dict):
        size = update["dyno_size"].get("name") or next(
            (s for s in resources.DYNO_SIZES if resources.stable_id("dyno-size", s) == update["dyno_size"].get("id")), None)
        if size is None:
            raise invalid("dyno_size must name a dyno size by name or id.")
    if size is None:
        return None
    match = next((s for s in resources.DYNO_SIZES if s.lower() == str(size).lower()), None)
    if match is None:
        raise invalid(f"Dyno size {size!r} is unknown; use one of: {', '.join(resources.DYNO_SIZES)}.")
    return match


def _check_webhook(include: Any, level: Any, url: Any, secret: Any, authorization: Any) -> None:
    if not isinstance(include, list) or not include or not all(isinstance(i, str) and i.startswith("api:") for i in include):
        raise invalid('include must be a non-empty array of entities such as "api:release", "api:dyno".')
    if level not in ("notify", "sync"):
        raise invalid('level must be "notify" or "sync".')
    if not isinstance(url, str) or not re.match(r"^https?://[^/\s]+", url):
        raise invalid("url must be an http:// or https:// URL.")
    for name, value in (("secret", secret), ("authorization", authorization)):
        if value is not None and not isinstance(value, str):
            raise invalid(f"{name} must be a string or null.")
