"""The demo's story against a local Heroku: what a team sees when a bad release meets backout.

`Story` plays it step by step: an app with a heroku-postgresql add-on and backout's config vars,
a real `backout worker`, code v1 deployed through the release hook and verified healthy, notes
written, code v2 (a migration and a bug) deployed, the health monitor's auto-rollback (down
migration, then code and config), and the checks that everything came back. Every step has a
name; a step that does not verify raises `StepFailed` naming it. The ledger is the add-on
database's `backout` schema, as on Heroku when BACKOUT_DATABASE_URL is not set, so it goes when
the add-on is destroyed.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import psycopg
import redis
import requests
from rq import Worker

from backout import deploy, ledger, timestamps
from backout.demo import slug
from backout.demo.receiver import Receiver
from backout.errors import BackoutError
from backout.health.policy import EventKind
from backout.heroku import HerokuClient
from backout.release_version import rollback_description
from backout.ledger.records import (
    FINAL_STATUSES,
    CheckpointKind,
    CheckpointRow,
    CheckpointStatus,
    HealthEventRow,
    RequestRow,
    RequestStatus,
    StepRow,
    StepStatus,
)
from backout.storage import config as storage_config
from backout.storage.client import make_client
from backout_sandbox import processes
from backout_sandbox.s3 import LocalS3
from backout_sandbox.server import Sandbox

PLAN = "heroku-postgresql:essential-0"
# Quick enough for a demo, slow enough for a loaded machine: a dyno boots well inside the grace.
HEALTH = {
    "BACKOUT_HEALTH_INTERVAL": "0.5",
    "BACKOUT_HEALTH_THRESHOLD": "3",
    "BACKOUT_HEALTH_GRACE": "4",
    "BACKOUT_HEALTH_WINDOW": "3",
    "BACKOUT_HEALTH_TIMEOUT": "2",
    # The app names its release in X-Release: probes answered by the release being replaced
    # do not count for the new one.
    "BACKOUT_HEALTH_RELEASE_HEADER": "X-Release",
}
NOTES = ("buy milk", "call the plumber about the boiler", "v1 is the good release")
# Each note's attachment, uploaded to the app's versioned bucket (BACKOUT_FILES); v2 overwrites the
# first and deletes the second when it starts, and the rollback brings them back with the data.
ATTACHMENTS = "attachments/"
WORKER_STOP = 25.0  # Heroku gives a worker 30 s after SIGTERM
POLL = 0.2

# Health events worth a progress line while waiting (grace and stale rounds are routine).
NARRATED = (EventKind.WATCH_STARTED, EventKind.COUNTED, EventKind.RECOVERED, EventKind.FAILED, EventKind.VERIFIED,
            EventKind.ROLLBACK_REQUESTED, EventKind.SUPPRESSED, EventKind.DRY_RUN, EventKind.ROLLBACK_FINISHED,
            EventKind.ROLLBACK_FAILED)


class StepFailed(BackoutError):
    """A step of the story did not verify; `step` names it."""

    def __init__(self, step: str, message: str) -> None:
        self.step = step
        super().__init__(f"step '{step}' failed: {message}")


@dataclass
class Mark:
    """Something the demo itself did or saw, for the timeline (the ledger supplies the rest)."""

    at: float  # time.time()
    what: str
    detail: str = ""
    where: str = ""


@dataclass
class Facts:
    """What the story learned along the way, for the checks and the timeline."""

    app: str = ""
    web_url: str = ""
    database_url: str = ""
    database_name: str = ""
    releases: dict[str, dict[str, Any]] = field(default_factory=dict)  # "v1"/"v2" -> the release (after its phase)
    request: RequestRow | None = None
    rollback_release: dict[str, Any] | None = None
    marks: list[Mark] = field(default_factory=list)
    attachments: dict[str, bytes] = field(default_factory=dict)  # as written under v1


class Story:
    def __init__(self, sandbox: Sandbox, work_dir: Path, redis_url: str, receiver: Receiver, app: str,
                 say: Callable[[str], None], s3: LocalS3) -> None:
        self.sandbox = sandbox
        self.s3 = s3
        self.s3_client = make_client(storage_config.load(s3.env().get))
        self.uploads = f"{app}-uploads"
        self.work_dir = work_dir
        self.redis_url = redis_url
        self.receiver = receiver
        self.say = say
        self.facts = Facts(app=app)
        self.client = HerokuClient(sandbox.token, sandbox.url, sandbox.url)
        self.worker: subprocess.Popen[bytes] | None = None
        self.worker_log = work_dir / "worker.log"
        self.web: subprocess.Popen[bytes] | None = None
        self.web_log = work_dir / "web.log"
        self._ledger: ledger.LedgerConnection | None = None
        self._seen_events: set[str] = set()
        self._seen_steps: set[int] = set()

    # --- the steps ---------------------------------------------------------------------------

    def create_app(self) -> None:
        """An app, its heroku-postgresql add-on as DATABASE, and the config vars backout reads."""
        app = self.facts.app
        created = self.client.create_app(app)
        self.facts.web_url = created["web_url"]
        self.client.create_addon(app, PLAN, attachment_name="DATABASE")
        config = self.client.config_vars(app)
        self.facts.database_url = config["DATABASE_URL"]
        self.facts.database_name = self.facts.database_url.rsplit("/", 1)[1]
        self.mark(f"app {app} created", f"{PLAN} as DATABASE ({self.facts.database_name})")
        # The release phase runs on a dyno: archives go to object storage; uploads live in a versioned bucket.
        archives = f"{app}-checkpoints"
        for bucket in (archives, self.uploads):
            self.s3_client.create_bucket(Bucket=bucket)
        self.s3_client.put_bucket_versioning(Bucket=self.uploads, VersioningConfiguration={"Status": "Enabled"})
        self.client.update_config_vars(app, {
            **self.sandbox.env,
            **self.s3.env(),
            "REDIS_URL": self.redis_url,
            "BACKOUT_BACKUP": "pg_dump",
            "BACKOUT_STORAGE_URL": f"s3://{archives}/backout",
            "BACKOUT_FILES": f"s3://{self.uploads}/{ATTACHMENTS}",
            "UPLOADS_BUCKET": self.uploads,
            "BACKOUT_MIGRATIONS": "alembic",
            "BACKOUT_HEALTH_URL": self.facts.web_url + "health",
            **HEALTH,
            "BACKOUT_AUTO_ROLLBACK": "code+down+files",
            "BACKOUT_NOTIFY_URL": self.receiver.url,
        })
        self.say(f"app {app} at {self.facts.web_url}: database {self.facts.database_name}, archives in "
                 f"s3://{archives}, uploads in s3://{self.uploads}/{ATTACHMENTS} (S3 on {self.s3.url}), "
                 f"auto-rollback code+down+files, health every {HEALTH['BACKOUT_HEALTH_INTERVAL']}s")

    def start_worker(self) -> None:
        """`backout worker` with the app's config vars in its environment, as a worker dyno has."""
        env = {name: os.environ[name] for name in processes.MACHINE_VARIABLES if name in os.environ}
        env.update(self.client.config_vars(self.facts.app))
        env["BACKOUT_LOG_LEVEL"] = "INFO"
        env["PYTHONUNBUFFERED"] = "1"
        with open(self.worker_log, "ab") as log:
            self.worker = subprocess.Popen([sys.executable, "-m", "backout", "worker"], cwd=self.work_dir, env=env,
                                           stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                           start_new_session=True)
        connection = redis.Redis.from_url(self.redis_url)
        try:
            self.wait("worker", lambda: Worker.count(connection=connection) > 0, 45, "the worker to register")
        finally:
            connection.close()
        self.mark("backout worker started", f"pid {self.worker.pid}: RQ jobs and the health monitor")
        self.say(f"backout worker running (pid {self.worker.pid}); its log: {self.worker_log}")

    def start_web(self, password: str) -> str:
        """`backout web` over the same ledger, with actions on (it is a rehearsal); its URL."""
        env = {name: os.environ[name] for name in processes.MACHINE_VARIABLES if name in os.environ}
        env.update(self.client.config_vars(self.facts.app))
        env.update({"BACKOUT_WEB_PASSWORD": password, "BACKOUT_WEB_ACTIONS": "true", "PYTHONUNBUFFERED": "1"})
        with open(self.web_log, "ab") as log:
            self.web = subprocess.Popen([sys.executable, "-m", "backout", "web", "--host", "127.0.0.1", "--port", "0"],
                                        cwd=self.work_dir, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=log, start_new_session=True)
        assert self.web.stdout is not None
        first = self.web.stdout.readline().decode(errors="replace")
        found = re.search(r"http://\S+/", first)
        if not found:
            raise StepFailed("web page", f"backout web did not start:\n{_tail(self.web_log)}")
        return f"{found[0]}apps/{self.facts.app}"

    def release(self, code: str) -> dict[str, Any]:
        """Deploy one version of the demo app and follow its release phase to the end."""
        step = f"release {code}"
        files = slug.version_files(code)
        made = self.client.create_slug(self.facts.app, slug.process_types(files), commit=f"demo-{code}",
                                       commit_description=f"the notes app, code {code}")
        self.client.upload_slug(made["blob"]["url"], deploy.tarball(files))
        release = self.client.create_release(self.facts.app, made["id"], description=f"Deploy code {code}")
        version = release["version"]
        self.mark(f"code {code} deployed as v{version}", "release phase: backout release -- alembic upgrade head")
        self.say(f"code {code} deployed as v{version}; release phase: checkpoint, then alembic upgrade head")
        done = self.client.wait_release(self.facts.app, release["id"], timeout=90, poll=POLL)
        if done["status"] != RequestStatus.SUCCEEDED:
            raise StepFailed(step, f"the release phase of v{version} ended {done['status']}:\n{self.app_log_tail()}")
        self.facts.releases[code] = done
        checkpoint = self.ledger_rows().checkpoint_of(version)
        if checkpoint is None or checkpoint["status"] != CheckpointStatus.COMPLETE:
            raise StepFailed(step, f"v{version}'s release phase left no complete checkpoint in the ledger")
        self.mark(f"v{version} released", "release phase succeeded; the web dyno restarts on it")
        self.say(f"v{version}: release phase done, checkpoint {checkpoint['id']} complete "
                 f"(alembic {' '.join(checkpoint['migrations_after'] or []) or 'empty'})")
        return done

    def scale_web(self) -> None:
        """One web dyno, as `heroku ps:scale web=1` (the formation exists once a slug names its process types)."""
        self.client.update_formation(self.facts.app, [{"type": "web", "quantity": 1}])

    def write_notes(self) -> None:
        step = "write notes"
        version = self.facts.releases["v1"]["version"]
        self.wait(step, lambda: self._health_code() == "v1", 30, f"v{version}'s web dyno to answer")
        for body in NOTES:
            answer = requests.post(self.facts.web_url + "notes", json={"body": body, "attachment": f"attached to: {body}"},
                                   timeout=10)
            if answer.status_code != 201:
                raise StepFailed(step, f"POST /notes answered {answer.status_code}: {answer.text[:200]}")
        self.facts.attachments = self.attachments()
        if len(self.facts.attachments) != len(NOTES):
            raise StepFailed(step, f"the app stored {len(self.facts.attachments)} attachments, not {len(NOTES)}")
        self.mark(f"{len(NOTES)} notes written", "POST /notes through the app's router, each with an attachment in S3")
        self.say(f"wrote {len(NOTES)} notes with attachments through {self.facts.web_url}notes")

    def wait_verified(self, code: str, version: int, timeout: float = 45) -> None:
        def verified() -> bool:
            rows = self.ledger_rows()
            if any(e["kind"] == "verified" and e["release_version"] == version for e in rows.events):
                return True
            self._refuse_on(rows, version, (EventKind.FAILED, EventKind.SUPPRESSED), f"verify {code}",
                            f"v{version} failed its health checks")
            return False

        self.wait(f"verify {code}", verified, timeout, f"the monitor to verify v{version}")

    def wait_rollback(self) -> dict[str, Any]:
        """The monitor notices v2 failing and asks for a rollback; the worker carries it out."""
        step = "auto-rollback"
        version = self.facts.releases["v2"]["version"]

        def requested() -> RequestRow | None:
            rows = self.ledger_rows()
            self._refuse_on(rows, version, (EventKind.SUPPRESSED, EventKind.DRY_RUN), step,
                            f"the monitor did not roll v{version} back")
            return rows.request

        def finished() -> RequestRow | None:
            request = self.ledger_rows().request
            return request if request and request["status"] in FINAL_STATUSES else None

        request = self.wait(step, requested, 45, f"the monitor to fail v{version} and request a rollback")
        request = self.facts.request = self.wait(step, finished, 120, f"rollback request {request['id']} to finish")
        if request["status"] != RequestStatus.SUCCEEDED:
            raise StepFailed(step, f"rollback request {request['id']} {request['status']}: {request['error']}")
        result = request["result"] or {}
        self.facts.rollback_release = self.client.release_info(self.facts.app, result["release_version"])
        return request

    # --- checks ------------------------------------------------------------------------------

    def check_outcome(self) -> None:
        """v1's code on v1's schema with the notes intact, and the whole story in the ledger."""
        step = "verify the outcome"
        v1, v2 = self.facts.releases["v1"], self.facts.releases["v2"]
        rollback = self.facts.rollback_release
        request = self.facts.request
        assert rollback is not None and request is not None
        current = self.client.current_release(self.facts.app)
        problems = []
        if current["version"] != rollback["version"]:
            problems.append(f"the current release is v{current['version']}, not the rollback release "
                            f"v{rollback['version']}")
        if current.get("description") != rollback_description(v1["version"]):
            problems.append(f"the current release is {current.get('description')!r}, not {rollback_description(v1['version'])!r}")
        if (current.get("slug") or {}).get("id") != v1["slug"]["id"]:
            problems.append(f"the current release does not run v{v1['version']}'s slug")
        code = self._health_code()
        if code != "v1":
            problems.append(f"/health answered {code!r}, not code v1 with status 200")
        problems += self._schema_problems()
        problems += self._file_problems()
        problems += self._ledger_problems(v1["version"], v2["version"], rollback["version"], request)
        if problems:
            raise StepFailed(step, "; ".join(problems))
        self.say(f"verified: v{rollback['version']} runs v{v1['version']}'s slug, /health 200 from code v1, "
                 "schema back at alembic 0001 without the priority column, notes and attachments intact "
                 "(v2's versions kept), ledger complete")

    def check_notifications(self) -> None:
        wanted = ("health.verified", "health.rollback_started", "rollback.succeeded")
        self.wait("notifications", lambda: all(e in self.receiver.events() for e in wanted), 15,
                  "the notifications " + ", ".join(wanted))

    def _schema_problems(self) -> list[str]:
        with psycopg.connect(self.facts.database_url, connect_timeout=10) as conn:
            columns = [c for (c,) in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = 'public' "
                "AND table_name = 'notes' ORDER BY ordinal_position")]
            versions = [v for (v,) in conn.execute("SELECT version_num FROM alembic_version")]
            notes = [b for (b,) in conn.execute("SELECT body FROM notes ORDER BY id")]
        problems = []
        if "priority" in columns:
            problems.append("the notes table still has v2's priority column")
        if versions != ["0001"]:
            problems.append(f"alembic_version is {versions}, not ['0001']")
        if notes != list(NOTES):
            problems.append(f"the notes table holds {notes}, not the {len(NOTES)} notes written under v1")
        answer = requests.get(self.facts.web_url + "notes", timeout=10)
        served = [n["body"] for n in answer.json().get("notes", [])] if answer.status_code == 200 else None
        if served != list(NOTES):
            problems.append(f"GET /notes answered {answer.status_code} with {served}")
        return problems

    def attachments(self) -> dict[str, bytes]:
        """The current attachments in the app's bucket."""
        pages = self.s3_client.get_paginator("list_objects_v2").paginate(Bucket=self.uploads, Prefix=ATTACHMENTS)
        keys = [item["Key"] for page in pages for item in page.get("Contents") or []]
        return {key: self.s3_client.get_object(Bucket=self.uploads, Key=key)["Body"].read() for key in keys}

    def _file_problems(self) -> list[str]:
        problems = []
        now = self.attachments()
        if now != self.facts.attachments:
            problems.append(f"the attachments are {sorted(now)} with other contents, not the {len(self.facts.attachments)} "
                            "written under v1")
        pages = self.s3_client.get_paginator("list_object_versions").paginate(Bucket=self.uploads, Prefix=ATTACHMENTS)
        overwritten = [v for page in pages for v in page.get("Versions") or []
                       if self.s3_client.get_object(Bucket=self.uploads, Key=v["Key"], VersionId=v["VersionId"])
                       ["Body"].read() == b"overwritten by v2"]
        if not overwritten:
            problems.append("v2's overwritten attachment is not among the versions: a version was destroyed")
        return problems

    def _ledger_problems(self, v1: int, v2: int, rollback: int, request: RequestRow) -> list[str]:
        rows = self.ledger_rows()
        problems = []
        deploy = {cp["release_version"]: cp for cp in rows.checkpoints if cp["kind"] == CheckpointKind.DEPLOY}
        if not (v1 in deploy and deploy[v1]["verified_healthy_at"]):
            problems.append(f"v{v1}'s checkpoint is not marked verified healthy")
        saved = [d.get("id") for d in (deploy[v2]["down_scripts"] if v2 in deploy else None) or []]
        if "0002" not in saved:
            problems.append(f"v{v2}'s checkpoint did not save migration 0002's down script (saved {saved})")
        if not any(cp["kind"] == CheckpointKind.SAFETY and cp["request_id"] == request["id"]
                   and cp["status"] == CheckpointStatus.COMPLETE
                   for cp in rows.checkpoints):
            problems.append(f"no complete safety checkpoint for request {request['id']}")
        if request["requested_by"] != "health-monitor" or request["db"] != "down":
            problems.append(f"the request was made by {request['requested_by']} with --db {request['db']}, "
                            "not by the health monitor with --db down")
        done = [s["step"] for s in rows.steps if s["status"] == StepStatus.DONE]
        for wanted in ("safety_checkpoint", "db_down", "files_restore", "code_rollback", "verify"):
            if wanted not in done:
                problems.append(f"the request has no '{wanted}' step done (done: {', '.join(done)})")
        if "db_down" in done and "code_rollback" in done and done.index("db_down") > done.index("code_rollback"):
            problems.append("the code was rolled back before the down migration")
        if rollback in deploy:
            problems.append(f"the rollback release v{rollback} took a checkpoint of its own; its release phase "
                            "should have recognized a rollback")
        kinds = {(e["kind"], e["release_version"]) for e in rows.events}
        for kind, version in (("verified", v1), ("failed", v2), ("rollback_requested", v2), ("verified", rollback)):
            if (kind, version) not in kinds:
                problems.append(f"no '{kind}' health event for v{version}")
        return problems

    # --- reading --------------------------------------------------------------------------------

    def ledger_rows(self) -> LedgerRows:
        """The app's checkpoints, health events, and its rollback request with its steps; new health
        events and steps get a progress line."""
        if self._ledger is None or self._ledger.closed:
            self._ledger = ledger.connect(self.facts.database_url)
        conn, app = self._ledger, self.facts.app
        rows = LedgerRows(
            checkpoints=list(reversed(ledger.list_checkpoints(conn, app))),
            events=list(reversed(ledger.health_events(conn, app, limit=1000))),
            request=next(iter(ledger.list_requests(conn, app, limit=1)), None),
        )
        if rows.request is not None:
            rows.steps = ledger.steps(conn, rows.request["id"])
        self._narrate(rows)
        return rows

    def _narrate(self, rows: LedgerRows) -> None:
        for event in rows.events:
            if event["id"] in self._seen_events:
                continue
            self._seen_events.add(event["id"])
            if event["kind"] in NARRATED:
                self.say(f"monitor: v{event['release_version']} {event['kind']}: {event['reason']}")
        for step in rows.steps:
            if step["id"] in self._seen_steps:
                continue
            self._seen_steps.add(step["id"])
            detail = step["detail"] or {}
            text = detail.get("progress") or ", ".join(f"{k} {v}" for k, v in detail.items() if not isinstance(v, (dict, list)))
            self.say(f"worker: {step['step']} {step['status']}" + (f": {text}" if text else ""))

    def _refuse_on(self, rows: LedgerRows, version: int, kinds: tuple[str, ...], step: str, headline: str) -> None:
        """Fail the step at once when the ledger already says how it ends badly."""
        for event in rows.events:
            if event["release_version"] == version and event["kind"] in kinds:
                raise StepFailed(step, f"{headline}: {event['kind']}: {event['reason']}")

    def _health_code(self) -> str | None:
        """Which code answers /health with 200 through the router (None when it does not)."""
        try:
            answer = requests.get(self.facts.web_url + "health", timeout=5)
        except requests.RequestException:
            return None
        if answer.status_code != 200:
            return None
        try:
            return answer.json().get("code")
        except ValueError:
            return None

    def app_log_tail(self, lines: int = 30) -> str:
        path = self.sandbox.log_path(self.facts.app)
        if not path.exists():
            return "(no app log)"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def worker_log_tail(self, lines: int = 30) -> str:
        return _tail(self.worker_log, lines)

    # --- plumbing --------------------------------------------------------------------------------

    def mark(self, what: str, detail: str = "", where: str = "") -> None:
        self.facts.marks.append(Mark(time.time(), what, detail, where))

    def wait(self, step: str, ready: Callable[[], Any], timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = ready()
            if value:
                return value
            if self.worker is not None and self.worker.poll() is not None:
                raise StepFailed(step, f"the worker exited with status {self.worker.returncode} while waiting "
                                       f"for {what}:\n{self.worker_log_tail()}")
            if time.monotonic() > deadline:
                raise StepFailed(step, f"timed out after {timeout:.0f}s waiting for {what}")
            time.sleep(POLL)

    def stop_web(self) -> None:
        if self.web is not None:
            processes.terminate(self.web, 5)
            if self.web.stdout is not None:
                self.web.stdout.close()

    def stop_worker(self) -> None:
        if self.worker is not None and self.worker.poll() is None:
            processes.terminate(self.worker, WORKER_STOP)
        elif self.worker is not None:
            processes.signal_group(self.worker, signal.SIGKILL)  # a work horse it left behind

    def close(self) -> None:
        if self._ledger is not None:
            self._ledger.close()
        self.client.close()


@dataclass
class LedgerRows:
    checkpoints: list[CheckpointRow]  # oldest first
    events: list[HealthEventRow]  # oldest first
    request: RequestRow | None
    steps: list[StepRow] = field(default_factory=list)  # oldest first

    def checkpoint_of(self, version: int) -> CheckpointRow | None:
        found = [cp for cp in self.checkpoints if cp["kind"] == CheckpointKind.DEPLOY and cp["release_version"] == version]
        return found[-1] if found else None


def _tail(path: Path, lines: int = 30) -> str:
    if not path.exists():
        return f"(no {path.name})"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def epoch(iso: str | None) -> float | None:
    return None if iso is None else timestamps.epoch(iso)
