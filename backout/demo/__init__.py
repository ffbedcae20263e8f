"""`backout demo [--keep]`: the whole story on this machine, end to end, in about a minute.

A local Heroku (the sandbox) runs a small notes app with a heroku-postgresql add-on; the release
hook checkpoints and migrates each release; a real `backout worker` watches the app's health.
Code v1 is released and verified healthy, notes are written, then code v2 (a migration and a
bug) is released; its health checks fail and the monitor rolls it back: a safety checkpoint,
the down migration, then code and config. The demo checks that v1's code runs on v1's schema
with the notes intact and that the ledger tells the story, prints the timeline, and removes
everything it made: the worker, the dynos, the sandbox, the add-on database (and with it the
ledger), its Redis database and its files. PostgreSQL and Redis are started if they were not
running, and then stopped again. With `--keep` everything stays up until Ctrl-C, to explore
with `backout status` and `backout checkpoints`.

Exit status: 0 when every step verified; 1 with the step that failed named; 2 when the machine
lacks something the demo needs.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import shlex
import shutil
import signal
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Callable, Literal, TextIO

import psycopg
import redis
import requests

from backout.demo import services, timeline
from backout.demo.receiver import Receiver
from backout.demo.story import NOTES, StepFailed, Story
from backout.errors import BackoutError, BadInput
from backout.ledger.records import CheckpointKind
from backout.output import Progress
from backout.release_version import rollback_description
from backout_sandbox.core.errors import SandboxError
from backout_sandbox.s3 import LocalS3
from backout_sandbox.server import start


def play(keep: bool = False, out: TextIO | None = None, say: Callable[[str], None] | None = None) -> int:
    """Play the story; 0 when every step verified. Progress goes to stderr, the timeline to `out`."""
    out = out or sys.stdout
    say = say or Progress(prefix="demo")
    _check_tools()
    started = time.time()
    problems: list[str] = []
    failed: StepFailed | None = None
    # Both stop the demo the same way, with everything it made removed (a shell that starts the
    # demo in the background has it ignore SIGINT, so that handler is set too).
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with ExitStack() as stack:
            story = _set_up(stack, say, problems)
            try:
                _play(story)
                with _step("timeline"):
                    _print_timeline(story, started, out)
            except StepFailed as exc:
                failed = exc
                say(str(exc).splitlines()[0])
                _report_failure(story, exc, out)
            except KeyboardInterrupt:
                say("interrupted: removing what the demo made")
                raise
            else:
                if keep:
                    _keep(story, out)
            say("cleaning up: worker, dynos, sandbox, add-on database and ledger, Redis database, files")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    problems += _left_behind(story)
    if problems:
        out.write("backout demo: step 'cleanup' failed: " + "; ".join(problems) + "\n")
    if failed or problems:
        return 1
    say(f"done in {time.time() - started:.1f}s: every step verified, nothing left behind")
    return 0


def _set_up(stack: ExitStack, say: Callable[[str], None], problems: list[str]) -> Story:
    """Services, a work directory, a Redis database, the notification receiver, the sandbox and the
    app; each is undone by `stack` in the reverse order, and a failure to undo is kept in `problems`."""

    def undo(what: str, action: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        def run() -> None:
            try:
                action(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - undo the rest; the failure is reported at the end
                problems.append(f"{what}: {type(exc).__name__}: {exc}")

        stack.callback(run)

    with _step("services"):
        for ensure in (services.ensure_postgres, services.ensure_redis):
            started = ensure(say)
            if started is not None:
                undo(f"stopping {started.name}", _stop_service, started, say)
    work_dir = Path(tempfile.mkdtemp(prefix="backout-demo-"))
    undo("removing the work directory", shutil.rmtree, work_dir)
    app = f"backout-demo-{secrets.token_hex(3)}"
    with _step("services"):
        claim = services.claim_database(app)
    undo("emptying the Redis database", claim.release)
    say(f"app {app}; work directory {work_dir}; Redis database {claim.url}")
    receiver = Receiver()
    undo("stopping the notification receiver", receiver.close)
    with _step("sandbox"):
        sandbox = start(port=0, state_path=work_dir / "sandbox.json", work_dir=work_dir / "sandbox",
                        postgres_url=services.POSTGRES_URL, stop_timeout=5, release_timeout=120)
    undo("stopping the sandbox and dropping its databases", sandbox.stop, drop_databases=True)
    say(f"sandbox (a local Heroku) on {sandbox.url}")
    with _step("services"):
        s3 = LocalS3(log=work_dir / "s3.log").start()
    undo("stopping the loopback S3 endpoint", s3.stop)
    say(f"S3 (moto's server, a real S3 endpoint) on {s3.url}")
    story = Story(sandbox, work_dir, claim.url, receiver, app, say, s3)
    undo("closing the story's connections", story.close)
    undo("stopping the worker", story.stop_worker)
    undo("stopping the web page", story.stop_web)
    return story


def _play(story: Story) -> None:
    with _step("create the app"):
        story.create_app()
    with _step("worker"):
        story.start_worker()
    with _step("release v1"):
        v1 = story.release("v1")
        story.scale_web()
    with _step("write notes"):
        story.write_notes()
    with _step("verify v1"):
        story.wait_verified("v1", v1["version"])
    with _step("release v2"):
        story.release("v2")
    with _step("auto-rollback"):
        story.wait_rollback()
    rollback = story.facts.rollback_release
    assert rollback is not None
    with _step("verify the rollback release"):
        story.wait_verified("the rollback release", rollback["version"])
    with _step("verify the outcome"):
        story.check_outcome()
    with _step("notifications"):
        story.check_notifications()


class _step:
    """Turns what can go wrong inside a step into StepFailed naming it."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type | None, exc: BaseException | None, tb: object) -> Literal[False]:
        if exc is None or isinstance(exc, StepFailed):
            return False
        if isinstance(exc, (BackoutError, SandboxError, requests.RequestException, psycopg.Error, redis.RedisError,
                            OSError)):
            raise StepFailed(self.name, f"{type(exc).__name__}: {exc}") from exc
        return False


def _print_timeline(story: Story, started: float, out: TextIO) -> None:
    facts = story.facts
    rows = story.ledger_rows()
    request: dict[str, Any] = dict(facts.request or {})
    out.write(f"\nThe story of {facts.app}, as the demo saw it and the ledger recorded it:\n\n")
    out.write(timeline.render(timeline.lines(facts, rows), started) + "\n")
    out.write("\nWhat people were told (BACKOUT_NOTIFY_URL):\n\n")
    out.write(timeline.render_messages(story.receiver.received(), started) + "\n")
    v1, v2 = facts.releases["v1"]["version"], facts.releases["v2"]["version"]
    rollback = (facts.rollback_release or {}).get("version")
    safety = next((cp["id"] for cp in rows.checkpoints if cp["kind"] == CheckpointKind.SAFETY), None)
    out.write(
        f"\nv{v2} (code v2) failed its health checks and was rolled back by request {request.get('id')}: "
        f"migration 0002 undone, then v{rollback} ('{rollback_description(v1)}') runs v1's code on v1's schema, "
        f"with the {len(NOTES)} notes written before v2 intact. Safety checkpoint {safety} holds v{v2}'s "
        f"database as it failed: `backout rollback --app {facts.app} --to {safety} --db restore --confirm "
        f"{facts.app}` would undo the rollback.\n"
        f"The ledger is the schema `backout` of the add-on database; `backout status --app {facts.app}` and "
        f"`backout checkpoints --app {facts.app}` show it (run `backout demo --keep` to explore it).\n")
    out.flush()


def _keep(story: Story, out: TextIO) -> None:
    """Leave everything running until Ctrl-C or SIGTERM; print how to look around."""
    facts = story.facts
    env_file = story.work_dir / "env"
    # The app's config vars, as `heroku run` would give them: the sandbox's token, the ledger's URL
    # (DATABASE_URL) and the health settings, so `backout health` judges as the monitor does.
    env = story.client.config_vars(facts.app)
    fd = os.open(env_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.writelines(f"{name}={shlex.quote(value)}\n" for name, value in env.items())
    backout = Path(sys.executable).with_name("backout")
    program = str(backout) if backout.exists() else "backout"
    password = secrets.token_urlsafe(18)
    with _step("web page"):
        page = story.start_web(password)
    out.write(
        f"\nThe page the team reads during an incident (`backout web`, with actions on):\n\n"
        f"  web page: {page}\n"
        f"  user: any name, password: {password}\n"
        f"\nEverything keeps running (sandbox, {facts.app}'s web dyno, the worker, the page). In another shell:\n\n"
        f"  set -a; . {env_file}; set +a     # the app's config vars: the sandbox's token, the ledger ...\n"
        f"  {program} status --app {facts.app}\n"
        f"  {program} checkpoints --app {facts.app}\n"
        f"  {program} health --app {facts.app}\n"
        f"  curl {facts.web_url}notes\n\n"
        f"Ctrl-C here (or kill {os.getpid()}) stops it all and removes what the demo made.\n")
    out.flush()
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        out.write("\nstopping\n")
        out.flush()


def _report_failure(story: Story, exc: StepFailed, out: TextIO) -> None:
    out.write(f"backout demo: {exc}\n")
    out.write(f"\nlast lines of the worker's log:\n{story.worker_log_tail()}\n")
    out.write(f"\nlast lines of the app's log:\n{story.app_log_tail()}\n")
    out.flush()


def _left_behind(story: Story) -> list[str]:
    """What the clean-up should have removed and did not."""
    found = []
    if story.worker is not None and story.worker.poll() is None:
        found.append(f"the worker (pid {story.worker.pid}) still runs")
    if story.work_dir.exists():
        found.append(f"{story.work_dir} still exists")
    if story.facts.database_name and services.postgres_answers():
        with psycopg.connect(services.POSTGRES_URL, connect_timeout=5) as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (story.facts.database_name,)).fetchone():
                found.append(f"the add-on database {story.facts.database_name} still exists")
    return found


def _stop_service(started: services.Started, say: Callable[[str], None]) -> None:
    say(f"stopping {started.name} (the demo started it)")
    started.stop()


def _check_tools() -> None:
    missing = [name for name in ("alembic", "sqlalchemy") if importlib.util.find_spec(name) is None]
    if missing:
        raise BadInput(f"the demo's app migrates with Alembic, but {' and '.join(missing)} is not installed; "
                       "pip install 'backout[demo]' (scripts/setup installs it)")
    bin_dir = str(Path(sys.executable).parent)
    if not shutil.which("alembic", path=bin_dir + os.pathsep + os.environ.get("PATH", "")):
        raise BadInput("the `alembic` command is not on PATH; pip install 'backout[demo]' into this Python")
    if not shutil.which("pg_dump"):
        raise BadInput("pg_dump is not on PATH; the demo's checkpoints use it (install postgresql-client, "
                       "or run scripts/setup)")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
