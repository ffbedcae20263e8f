"""The Heroku Platform API and Data API client: the calls backout makes, each returning Heroku's JSON.

Every error answer becomes `HerokuAPIError` with Heroku's `id` and `message`; retries follow
`http_retry`. Writes that would do their work twice if repeated (creating a release, an add-on, a
backup, a restore) are not retried after a 5xx; a rollback is, after it has looked whether the
first attempt already made the rollback release.
"""

from __future__ import annotations

import random as random_module
import re
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence, TypeAlias
from urllib.parse import quote, urlsplit

import requests

from backout import __version__
from backout.defaults import RELEASE_PHASE_LIMIT
from backout.errors import BackoutError, BadInput, HerokuAPIError
from backout.http_retry import BearerAuth, RetryingSession, RetryPolicy
from backout.output import human_bytes
from backout.redact import redact
from backout.release_version import parse_release_version, rollback_target
from backout.settings import HEROKU_API_URL, HEROKU_DATA_URL, Settings

ACCEPT = "application/vnd.heroku+json; version=3"
# The "sdk" variant adds `eligible_for_rollback` to releases.
ACCEPT_SDK = "application/vnd.heroku+json; version=3.sdk"

Progress = Callable[[str], None]

# A Platform or Data API object (a release, an add-on, a transfer ...) as Heroku documents it.
ApiObject: TypeAlias = dict[str, Any]

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)
_TRANSFER_NAME = re.compile(r"[abcr](\d+)")


class HerokuUnreachable(HerokuAPIError):
    """No answer at all (connection refused, reset or timed out), after the retries."""

    def __init__(self, message: str, method: str, path: str, hint: str = "") -> None:
        super().__init__(0, "unreachable", message, method, path)
        self.args = (f"Heroku API unreachable: {message} ({method} {path})" + (f"; {hint}" if hint else ""),)


def sandbox_hint(base: str) -> str:
    """How to reach the local sandbox instead of `base`, when a sandbox left its state in this directory."""
    from backout_sandbox.server import DEFAULT_STATE  # only on this error path: the sandbox is not light

    if not DEFAULT_STATE.exists():
        return ""
    if base.rstrip("/") in (HEROKU_API_URL, HEROKU_DATA_URL):
        return (f"a local sandbox keeps its state in {DEFAULT_STATE}: to use it, start `backout sandbox` and export "
                "the BACKOUT_HEROKU_API_URL and BACKOUT_HEROKU_DATA_URL it prints")
    return (f"if {base} is the local sandbox (its state is in {DEFAULT_STATE}), start it with `backout sandbox`, "
            "and export the BACKOUT_HEROKU_API_URL and BACKOUT_HEROKU_DATA_URL it prints")


class TransferFailed(BackoutError):
    """A Data API transfer (backup or restore) finished without succeeding."""

    def __init__(self, message: str, transfer: ApiObject) -> None:
        super().__init__(message)
        self.transfer = transfer


class WaitTimeout(BackoutError):
    """Something Heroku was doing did not finish in the time allowed."""


def release_ref(release: int | str) -> str:
    """The path segment for a release given as 12, "12", "v12" or a release id (UUID)."""
    text = str(release).strip()
    if not isinstance(release, bool):
        version = parse_release_version(release)
        if version is not None:
            return str(version)
        if _UUID.fullmatch(text):
            return text.lower()
    raise BadInput(f"release {release!r} is neither a version (v12) nor a release id (a UUID)")


def transfer_ref(transfer: int | str) -> str:
    """The path segment for a transfer given as its number (12), its name (b012) or its uuid."""
    text = str(transfer).strip()
    if not isinstance(transfer, bool):
        if text.isdigit():
            return str(int(text))
        named = _TRANSFER_NAME.fullmatch(text)
        if named:
            return str(int(named[1]))
        if _UUID.fullmatch(text):
            return text.lower()
    raise BadInput(f"transfer {transfer!r} is neither a number, a backup name (b012) nor a uuid")


def transfer_name(transfer: Mapping[str, Any]) -> str:
    """The name Heroku shows for a transfer: b012 (backup), a012 (scheduled), r012 (restore), c012 (copy)."""
    from_dump = transfer.get("from_type") == "pg_dump"
    to_restore = transfer.get("to_type") == "pg_restore"
    if from_dump and not to_restore:
        prefix = "a" if transfer.get("schedule") else "b"
    elif to_restore:
        prefix = "c" if from_dump else "r"
    else:
        prefix = "b"
    return f"{prefix}{int(transfer.get('num') or 0):03d}"


def _segment(value: str, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise BadInput(f"{what} is empty; give its name or id")
    return quote(value.strip(), safe="")


class HerokuClient:
    """A Platform API and Data API client authenticated with one token."""

    def __init__(
        self,
        token: str,
        api_url: str = HEROKU_API_URL,
        data_url: str = HEROKU_DATA_URL,
        timeout: float = 30.0,
        *,
        policy: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        random: Callable[[], float] = random_module.random,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        try:
            self._auth = BearerAuth(token)
        except ValueError:
            raise BadInput(
                "HEROKU_API_KEY is empty or contains spaces or control characters; "
                "expected a Platform API token (heroku authorizations:create)"
            ) from None
        self.api_url = api_url.rstrip("/")
        self.data_url = data_url.rstrip("/")
        self.sleep = sleep
        self.clock = clock
        self.http = RetryingSession(
            headers={"Accept": ACCEPT, "User-Agent": f"backout/{__version__}"},
            auth=self._auth, timeout=timeout, policy=policy, sleep=sleep, random=random,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> HerokuClient:
        settings.require("HEROKU_API_KEY")
        assert settings.heroku_api_key is not None
        return cls(settings.heroku_api_key, settings.heroku_api_url, settings.heroku_data_url)

    def __repr__(self) -> str:
        return f"HerokuClient(api_url={self.api_url!r}, data_url={self.data_url!r})"

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> HerokuClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the one way every call goes -------------------------------------------------------------

    def _send(
        self,
        method: str,
        path: str,
        *,
        data_api: bool = False,
        app: str | None = None,
        accept: str = ACCEPT,
        headers: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> requests.Response:
        base = self.data_url if data_api else self.api_url
        try:
            response = self.http.request(method, base + path, headers={"Accept": accept, **(headers or {})}, **kwargs)
        except requests.RequestException as exc:
            raise HerokuUnreachable(self._describe(exc, base), method, path, sandbox_hint(base)) from None
        if response.status_code >= 400:
            raise self._error(response, method, path, app)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._send(method, path, **kwargs)
        return response.json() if response.content.strip() else {}

    def _describe(self, exc: requests.RequestException, base: str) -> str:
        reason = getattr(exc.args[0], "reason", None) if exc.args else None
        detail = str(reason or exc)
        # urllib3 leads with an object repr ("<HTTPConnection object at 0x...>: Failed to ...").
        if detail.startswith("<") and ">: " in detail:
            detail = detail.split(">: ", 1)[1]
        return redact(f"no answer from {urlsplit(base).netloc} ({type(exc).__name__}: {detail})", [self._auth.secret])

    def _error(self, response: requests.Response, method: str, path: str, app: str | None) -> HerokuAPIError:
        status = response.status_code
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and (body.get("id") or body.get("message")):
            error_id = str(body.get("id") or _slug(response.reason) or f"http_{status}")
            message = str(body.get("message") or response.reason or f"HTTP {status}")
        else:
            text = " ".join(re.sub(r"<[^>]+>", " ", response.text or "").split())[:200]
            error_id = _slug(response.reason) or f"http_{status}"
            message = text or response.reason or f"HTTP {status}"
        if status == 401:
            message = (
                f"Heroku refused the API token: {message} "
                "(check HEROKU_API_KEY; `heroku authorizations:create` makes a new token)"
            )
        elif status == 404 and app is not None:
            resource = body.get("resource") if isinstance(body, dict) else None
            names_app = path.rstrip("/").count("/") == 2 or re.search(r"\bapp\b", message, re.I)
            if resource == "app" or (resource is None and names_app):
                message = f"app {app!r} not found (check the name, or that your token can see it)"
            else:
                message = f"{message} (app {app!r})"
        return HerokuAPIError(status, error_id, redact(message, [self._auth.secret]), method, path)

    # --- apps ------------------------------------------------------------------------------------

    def app_info(self, app: str) -> ApiObject:
        return self._json("GET", f"/apps/{_segment(app, 'app')}", app=app)

    def create_app(self, name: str, region: str | None = None) -> ApiObject:
        body: dict[str, Any] = {"name": name}
        if region:
            body["region"] = region
        return self._json("POST", "/apps", json=body)

    # --- releases --------------------------------------------------------------------------------

    def _release_pages(self, app: str, newest_first: bool, page_size: int) -> Iterator[list[dict[str, Any]]]:
        """Pages of releases, following Range pagination (206 + Next-Range) to the end."""
        if not 1 <= page_size <= 1000:
            raise BadInput(f"page_size {page_size} is out of range; Heroku allows 1 to 1000")
        path = f"/apps/{_segment(app, 'app')}/releases"
        order = "desc" if newest_first else "asc"
        range_header = f"version ..; order={order}, max={page_size}"
        while True:
            response = self._send("GET", path, app=app, accept=ACCEPT_SDK, headers={"Range": range_header})
            yield response.json()
            next_range = response.headers.get("Next-Range")
            if response.status_code != 206 or not next_range:
                return
            if next_range == range_header:
                raise HerokuAPIError(response.status_code, "bad_range", "Next-Range repeats the Range sent", "GET", path)
            range_header = next_range

    def list_releases(self, app: str, newest_first: bool = True, page_size: int = 200) -> list[ApiObject]:
        return [release for page in self._release_pages(app, newest_first, page_size) for release in page]

    def recent_releases(self, app: str, count: int = 20) -> list[ApiObject]:
        """The newest `count` releases, newest first, in one request."""
        return next(self._release_pages(app, True, count), [])

    def release_info(self, app: str, id_or_version: int | str) -> ApiObject:
        path = f"/apps/{_segment(app, 'app')}/releases/{release_ref(id_or_version)}"
        return self._json("GET", path, app=app, accept=ACCEPT_SDK)

    def current_release(self, app: str) -> ApiObject:
        """The newest release with `current: true` (newer failed or pending releases are skipped)."""
        for page in self._release_pages(app, True, 20):
            for release in page:
                if release.get("current"):
                    return release
        raise BackoutError(f"app {app!r} has no current release")

    def create_release(self, app: str, slug_id: str, description: str | None = None) -> ApiObject:
        body: dict[str, Any] = {"slug": slug_id}
        if description:
            body["description"] = description
        return self._json("POST", f"/apps/{_segment(app, 'app')}/releases", app=app, json=body)

    def rollback(self, app: str, release_id: int | str) -> ApiObject:
        """Roll back to a release (id or version) and return the new rollback release.

        After a 5xx or a lost connection the POST may have worked; before retrying, the releases
        made since are read, and a release described `Rollback to vN` is returned instead of
        rolling back a second time.
        """
        target = self.release_info(app, release_id)
        newest = next(self._release_pages(app, True, 1), [])
        newest_version = newest[0]["version"] if newest else 0
        already: list[ApiObject] = []

        def not_done_yet() -> bool:
            try:
                found = self.rollback_release_since(app, target["version"], newest_version)
            except HerokuAPIError as exc:
                raise BackoutError(
                    f"rollback of {app} to v{target['version']}: the request failed, and reading the releases "
                    f"to see whether it took effect failed too ({exc}); check the releases before trying again"
                ) from None
            if found:
                already.append(found)
            return found is None

        try:
            return self._json(
                "POST", f"/apps/{_segment(app, 'app')}/releases", app=app,
                json={"release": target["id"]}, before_retry=not_done_yet,
            )
        except HerokuAPIError:
            if already:
                return already[0]
            raise

    def rollback_release_since(self, app: str, target_version: int, after_version: int,
                               failed: bool = True) -> ApiObject | None:
        """The newest release `Rollback to v<target_version>` made after `after_version` (one whose
        release phase failed too, unless `failed` is False): what a rollback made, even when Heroku's
        answer to it was lost."""
        for page in self._release_pages(app, True, 20):
            for release in page:
                if release["version"] <= after_version:
                    return None
                if rollback_target(release.get("description")) == target_version and (
                        failed or release.get("status") in ("pending", "succeeded")):
                    return release
        return None

    def wait_release(
        self, app: str, release_id: int | str, timeout: float = RELEASE_PHASE_LIMIT, poll: float = 1.0,
        progress: Progress | None = None,
    ) -> ApiObject:
        """Poll the release until its status is no longer `pending` (its release phase ended)."""
        deadline = self.clock() + timeout
        while True:
            release = self.release_info(app, release_id)
            if release.get("status") != "pending":
                return release
            if self.clock() >= deadline:
                raise WaitTimeout(f"release v{release.get('version')} of {app} still pending after {timeout:.0f}s")
            if progress:
                progress(f"release v{release.get('version')}: its release phase is still running")
            self.sleep(poll)

    # --- slugs -----------------------------------------------------------------------------------

    def create_slug(
        self, app: str, process_types: Mapping[str, str], commit: str | None = None,
        commit_description: str | None = None, stack: str | None = None, checksum: str | None = None,
    ) -> ApiObject:
        body: dict[str, Any] = {"process_types": dict(process_types)}
        for key, value in (("commit", commit), ("commit_description", commit_description), ("stack", stack),
                           ("checksum", checksum)):
            if value is not None:
                body[key] = value
        # A repeated create leaves an unused slug behind, which is harmless.
        return self._json("POST", f"/apps/{_segment(app, 'app')}/slugs", app=app, json=body, retry_post=True)

    def slug_info(self, app: str, slug_id: str) -> ApiObject:
        return self._json("GET", f"/apps/{_segment(app, 'app')}/slugs/{_segment(slug_id, 'slug')}", app=app)

    def upload_slug(self, blob_url: str, tarball: str | Path | bytes) -> None:
        """PUT the slug tarball to the blob URL from `create_slug`, without credentials, as Heroku says."""
        where = urlsplit(blob_url)
        shown = f"{where.scheme}://{where.netloc}{where.path}"  # the query is a signature: keep it out
        headers = {"Content-Type": ""}
        try:
            if isinstance(tarball, bytes):
                response = self.http.request("PUT", blob_url, data=tarball, headers=headers, authenticated=False)
            else:
                with open(tarball, "rb") as body:
                    response = self.http.request("PUT", blob_url, data=body, headers=headers, authenticated=False)
        except requests.RequestException as exc:
            raise HerokuUnreachable(self._describe(exc, shown), "PUT", where.path) from None
        if response.status_code >= 300:
            text = " ".join(re.sub(r"<[^>]+>", " ", response.text or "").split())[:200]
            raise HerokuAPIError(response.status_code, "upload_failed", text or response.reason, "PUT", shown)

    def release_output(self, output_stream_url: str) -> Iterator[str]:
        """The release phase's output, line by line as it is written, until the phase ends. The
        URL (a release's `output_stream_url`) needs no token, as Heroku documents."""
        try:
            with requests.get(output_stream_url, stream=True, timeout=(10, None)) as response:
                if response.status_code != 200:
                    return
                for line in response.iter_lines():
                    yield line.decode("utf-8", "replace")
        except requests.RequestException as exc:
            where = urlsplit(output_stream_url)
            raise HerokuUnreachable(self._describe(exc, f"{where.scheme}://{where.netloc}"), "GET", where.path) from None

    # --- config vars -----------------------------------------------------------------------------

    def config_vars(self, app: str) -> ApiObject:
        return self._json("GET", f"/apps/{_segment(app, 'app')}/config-vars", app=app)

    def release_config_vars(self, app: str, release_id_or_version: int | str) -> ApiObject:
        path = f"/apps/{_segment(app, 'app')}/releases/{release_ref(release_id_or_version)}/config-vars"
        return self._json("GET", path, app=app)

    def update_config_vars(self, app: str, changes: Mapping[str, str | None]) -> ApiObject:
        """Set config vars (a None value deletes one); returns the whole new set."""
        # Setting the same values again leaves the same config, so a retry is safe.
        return self._json(
            "PATCH", f"/apps/{_segment(app, 'app')}/config-vars", app=app, json=dict(changes), retry_post=True
        )

    # --- formation and dynos ---------------------------------------------------------------------

    def formation(self, app: str) -> list[ApiObject]:
        return self._json("GET", f"/apps/{_segment(app, 'app')}/formation", app=app)

    def update_formation(self, app: str, updates: Sequence[Mapping[str, Any]]) -> list[ApiObject]:
        """Batch update: `[{"type": "web", "quantity": 2}, ...]`; quantities are absolute, so retry-safe."""
        return self._json(
            "PATCH", f"/apps/{_segment(app, 'app')}/formation", app=app,
            json={"updates": [dict(u) for u in updates]}, retry_post=True,
        )

    def dynos(self, app: str) -> list[ApiObject]:
        return self._json("GET", f"/apps/{_segment(app, 'app')}/dynos", app=app)

    def restart_dynos(self, app: str, dyno: str | None = None) -> dict:
        """Restart every dyno of the app, or one (by name or id)."""
        path = f"/apps/{_segment(app, 'app')}/dynos"
        if dyno is not None:
            path += f"/{_segment(dyno, 'dyno')}"
        return self._json("DELETE", path, app=app)

    # --- add-ons and attachments -----------------------------------------------------------------

    def addons(self, app: str) -> list[ApiObject]:
        return self._json("GET", f"/apps/{_segment(app, 'app')}/addons", app=app)

    def addon_info(self, app: str, addon: str) -> ApiObject:
        return self._json("GET", f"/apps/{_segment(app, 'app')}/addons/{_segment(addon, 'add-on')}", app=app)

    def create_addon(
        self, app: str, plan: str, config: Mapping[str, str] | None = None, name: str | None = None,
        attachment_name: str | None = None, confirm: str | None = None,
    ) -> ApiObject:
        body: dict[str, Any] = {"plan": plan}
        if config:
            body["config"] = dict(config)
        if name:
            body["name"] = name
        if attachment_name:
            body["attachment"] = {"name": attachment_name}
        if confirm:
            body["confirm"] = confirm
        return self._json("POST", f"/apps/{_segment(app, 'app')}/addons", app=app, json=body)

    def attachments(self, app: str) -> list[ApiObject]:
        return self._json("GET", f"/apps/{_segment(app, 'app')}/addon-attachments", app=app)

    def create_attachment(self, app: str, addon: str, name: str, confirm: str | None = None) -> ApiObject:
        body: dict[str, Any] = {"app": app, "addon": addon, "name": name}
        if confirm:
            body["confirm"] = confirm
        return self._json("POST", "/addon-attachments", json=body)

    def delete_attachment(self, attachment_id: str) -> ApiObject:
        return self._json("DELETE", f"/addon-attachments/{_segment(attachment_id, 'attachment')}")

    # --- webhooks and rate limits ----------------------------------------------------------------

    def webhooks(self, app: str) -> list[ApiObject]:
        return self._json("GET", f"/apps/{_segment(app, 'app')}/webhooks", app=app)

    def create_webhook(
        self, app: str, url: str, include: Sequence[str], level: str = "notify", secret: str | None = None
    ) -> ApiObject:
        body: dict[str, Any] = {"url": url, "include": list(include), "level": level}
        if secret:
            body["secret"] = secret
        return self._json("POST", f"/apps/{_segment(app, 'app')}/webhooks", app=app, json=body)

    def rate_limits(self) -> dict:
        """`{"remaining": N}`: the request tokens left (this call does not spend one)."""
        return self._json("GET", "/account/rate-limits")

    # --- Data API: backups, transfers, restores --------------------------------------------------

    def database_info(self, addon_id: str) -> ApiObject:
        return self._json("GET", f"/client/v11/databases/{_segment(addon_id, 'add-on')}", data_api=True)

    def capture_backup(self, addon_id: str) -> ApiObject:
        """Start a backup of the database; returns the transfer (`uuid`, `num`, `from_name`, ...)."""
        return self._json("POST", f"/client/v11/databases/{_segment(addon_id, 'add-on')}/backups", data_api=True)

    def transfers(self, app: str) -> list[ApiObject]:
        return self._json("GET", f"/client/v11/apps/{_segment(app, 'app')}/transfers", data_api=True, app=app)

    def transfer(self, app: str, num: int | str, verbose: bool = False) -> ApiObject:
        """One transfer by number, name (b012) or uuid; `verbose` adds its `logs`."""
        path = f"/client/v11/apps/{_segment(app, 'app')}/transfers/{transfer_ref(num)}"
        return self._json("GET", path, data_api=True, app=app, params={"verbose": "true"} if verbose else None)

    def backup_url(self, app: str, num: int | str) -> ApiObject:
        """A temporary public URL of a backup: `{"url": ..., "expires_at": ...}`."""
        path = f"/client/v11/apps/{_segment(app, 'app')}/transfers/{transfer_ref(num)}/actions/public-url"
        # Asking twice only makes a second link to the same backup.
        return self._json("POST", path, data_api=True, app=app, retry_post=True)

    def wait_transfer(
        self, app: str, num: int | str, timeout: float = 3600, poll: float = 2.0, progress: Progress | None = None
    ) -> ApiObject:
        """Poll a transfer until `finished_at`; raise TransferFailed (with its last log line) if it failed."""
        deadline = self.clock() + timeout
        shown = None
        while True:
            transfer = self.transfer(app, num)
            if transfer.get("finished_at"):
                break
            if self.clock() >= deadline:
                raise WaitTimeout(f"{transfer_name(transfer)} of {app} not finished after {timeout:.0f}s")
            state = human_bytes(transfer.get("processed_bytes") or 0) if transfer.get("started_at") else "pending"
            if progress and state != shown:
                progress(f"{transfer_name(transfer)}: {state}")
                shown = state
            self.sleep(poll)
        if transfer.get("succeeded"):
            return transfer
        # Heroku includes the logs only when asked for them.
        logs = self.transfer(app, num, verbose=True).get("logs") or []
        last = logs[-1].get("message", "") if logs else "no logs"
        raise TransferFailed(
            f"{transfer_name(transfer)} ({transfer.get('from_name')} to {transfer.get('to_name')}) failed: {last}",
            transfer,
        )

    def restore_backup(self, addon_id: str, backup_url: str) -> ApiObject:
        """Start restoring a backup (its URL) into the database; returns the restore transfer."""
        return self._json(
            "POST", f"/client/v11/databases/{_segment(addon_id, 'add-on')}/restores",
            data_api=True, json={"backup_url": backup_url},
        )

    def wait_status(self, addon_id: str) -> ApiObject:
        """`{"waiting?": bool, "message": str, "error?": bool}` for a database being made or changed."""
        return self._json("GET", f"/client/v11/databases/{_segment(addon_id, 'add-on')}/wait_status", data_api=True)

    def wait_database(
        self, addon_id: str, timeout: float = 3600, poll: float = 5.0, progress: Progress | None = None
    ) -> ApiObject:
        """Poll until the database is no longer `waiting?`; raise if Heroku reports an error."""
        deadline = self.clock() + timeout
        shown = None
        while True:
            try:
                status = self.wait_status(addon_id)
            except HerokuAPIError as exc:
                # A database still being provisioned is not known to the Data API yet.
                if exc.status != 404:
                    raise
                status = {"waiting?": True, "message": "not provisioned yet"}
            if status.get("error?"):
                raise BackoutError(f"database {addon_id}: {status.get('message') or 'error'}")
            if not status.get("waiting?"):
                return status
            if self.clock() >= deadline:
                raise WaitTimeout(f"database {addon_id} still waiting after {timeout:.0f}s: {status.get('message')}")
            if progress and status.get("message") != shown:
                shown = status.get("message")
                progress(f"database {addon_id}: {shown}")
            self.sleep(poll)


def _slug(reason: str | None) -> str:
    return re.sub(r"[^a-z0-9]+", "_", (reason or "").lower()).strip("_")
