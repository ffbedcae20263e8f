"""`backout release -- CMD ...`: the release-phase hook.

1. Take a checkpoint, with the verdict on the pending migrations (backout.verdict) printed; if that
   fails, or the verdict breaks BACKOUT_REQUIRE, exit non-zero so Heroku does not deploy the release.
2. Run the migrate command as a child, its output streaming straight to the release log.
3. On success record the migration state after it, mark the checkpoint complete, and schedule the
   post-deploy health watch when Redis is configured (a missing Redis only warns).
4. On failure undo, newest first, the migrations it recorded as applied in this run, from the down
   scripts saved in the checkpoint; mark the checkpoint failed; exit non-zero.
5. A rollback release (Heroku runs the release phase again for it) whose migrate command finds
   nothing pending takes no new checkpoint; one made to a release newer than the database (by hand,
   `heroku rollback vN` after a restore, say) applies migrations, so it is checkpointed like any
   deploy, with the down scripts of what it applies.
6. Progress lines carry the elapsed time, so a slow backup shows in the release log.

Without HEROKU_API_KEY the Platform API is not asked: the checkpoint then has no release id,
previous release or config fingerprint, and a rollback release cannot be told from a deploy (it
gets a checkpoint of its own, which is harmless). BACKOUT_BACKUP=heroku needs the key.
"""

from __future__ import annotations

import subprocess
import sys
from typing import TYPE_CHECKING, Any, Callable, Sequence

import psycopg

from backout import checkpoint, ledger
from backout.backups.abandoned import clean_abandoned_checkpoints
from backout.errors import BackoutError, HerokuAPIError, PolicyViolation
from backout.ledger.records import CheckpointRow, CheckpointStatus, LedgerConnection
from backout.redact import known_secrets, redact, relay
from backout.settings import Settings

if TYPE_CHECKING:
    from backout.backups.pg_dump import Dump

HEALTH_JOB = "backout.jobs.health.watch_release"


def run(settings: Settings, argv: Sequence[str], progress: Callable[[str], None], heroku: Any = None,
        dump: "Dump | None" = None) -> int:
    """The hook's whole run; returns the exit status (0 deployed, non-zero not deployed). `dump` is
    the checkpoint's pg_dump when the caller started it early (`pg_dump.start_early`); the caller
    stops it if no checkpoint uses it."""
    settings.require("DATABASE_URL", "HEROKU_APP_NAME", "HEROKU_RELEASE_VERSION")
    if settings.backup == "heroku":
        settings.require("HEROKU_API_KEY")
    app, version = settings.app_name, settings.release_version
    assert app is not None and version is not None
    say = progress
    if heroku is None and settings.heroku_api_key:
        from backout.heroku import HerokuClient

        with HerokuClient.from_settings(settings) as client:
            return run(settings, argv, progress, client, dump)
    if heroku is None:
        say("warning: HEROKU_API_KEY is not set: no previous release, config fingerprint or rollback "
            "detection from the Platform API")
    from backout.migrations import get_adapter

    adapter = get_adapter(settings.migrations, settings.migrations_path)
    assert settings.ledger_url is not None
    say(f"release v{version} of {app}")
    with ledger.connect(settings.ledger_url) as ledger_conn:
        clean_abandoned_checkpoints(settings, ledger_conn, f"the release phase of v{version}", say)
        # Two release phases of the same release at once (a retried deploy) would both checkpoint:
        # the second waits for the first, then finds its checkpoint.
        with ledger.release_lock(ledger_conn, app, version):
            return _checkpoint_and_migrate(settings, ledger_conn, heroku, adapter, argv, say, dump)


def _checkpoint_and_migrate(settings: Settings, ledger_conn: LedgerConnection, heroku: Any, adapter: Any,
                            argv: Sequence[str], say: Callable[[str], None], dump: "Dump | None") -> int:
    app, version = settings.app_name or "", settings.release_version or 0
    facts = _platform_facts(settings, heroku, app, version)
    release = checkpoint.release_from_api(settings, facts, heroku)
    earlier = ledger.checkpoint_for_release(ledger_conn, app, version)
    if earlier is not None:
        # The release phase of the same release ran again: its checkpoint stands.
        say(f"v{version} already has checkpoint {earlier['id']}: no new checkpoint")
        return _run_only(settings, ledger_conn, argv, say)
    with checkpoint.database_connection(settings.database_url or "") as app_conn:
        if release.is_rollback:
            pending = adapter.pending(app_conn)
            if not pending:
                say(f"v{version} rolls back to v{release.rollback_of}, and no migration is pending: "
                    "no new checkpoint")
                return _run_only(settings, ledger_conn, argv, say)
            say(f"v{version} rolls back to v{release.rollback_of}, and its migrate command will apply "
                f"{len(pending)} migration(s) ({', '.join(m.id for m in pending)}): a checkpoint, as for a deploy")
        try:
            cp = checkpoint.take(settings, ledger_conn, release, heroku=heroku, adapter=adapter,
                                 facts=facts, progress=say, complete=False, app_conn=app_conn, dump=dump)
        except PolicyViolation:
            say("the pending migrations break BACKOUT_REQUIRE: the release is not deployed")
            raise
        except BackoutError:
            say("checkpoint failed: the release is not deployed")
            raise
        return _migrate(settings, ledger_conn, app_conn, cp, adapter, argv, say)


def _platform_facts(settings: Settings, heroku: Any, app: str, version: int) -> dict[str, Any]:
    if heroku is None:
        return {}
    try:
        return checkpoint.lookup(settings, heroku, app, version, release=True, config=True,
                                 addon=settings.backup in ("heroku", "pitr"))
    except HerokuAPIError as exc:
        raise BackoutError(f"cannot read release v{version} of {app} from the Platform API: {exc}") from None


def _migrate(settings: Settings, ledger_conn: LedgerConnection, app_conn: psycopg.Connection[Any], cp: CheckpointRow,
             adapter: Any, argv: Sequence[str], say: Callable[[str], None]) -> int:
    try:
        status = _run_child(argv, say)
        if status == 0:
            after = adapter.applied(app_conn)
            ledger.update_checkpoint(ledger_conn, cp["id"], migrations_after=after, status=CheckpointStatus.COMPLETE,
                                     completed_at="now")
            count = len(adapter.applied_history(app_conn))
        else:
            undone, problem = _undo(app_conn, cp, adapter, say)
            error = f"the migrate command exited with status {status}"
            if undone:
                error += f"; undid {', '.join(undone)}"
            if problem:
                error += f"; {problem}"
            ledger.update_checkpoint(ledger_conn, cp["id"], status=CheckpointStatus.FAILED, error=error,
                                     migrations_after=adapter.applied(app_conn))
    except BaseException as exc:
        reason = str(exc) if isinstance(exc, BackoutError) else f"{type(exc).__name__}: {exc}"
        ledger.update_checkpoint(ledger_conn, cp["id"], status=CheckpointStatus.FAILED, error=redact(reason, settings.secrets()))
        raise
    if status != 0:
        say(f"{error}: the release is not deployed")
        return status if 0 < status < 126 else 1
    say(f"checkpoint {cp['id']} complete: {count} migrations applied")
    _prune(settings, ledger_conn, cp["app"], say)
    schedule_watch(settings, ledger_conn, cp["app"], cp["release_version"], say)
    return 0


def _prune(settings: Settings, ledger_conn: LedgerConnection, app: str, say: Callable[[str], None]) -> None:
    """Apply BACKOUT_KEEP now that a new checkpoint is complete; a deploy never fails for it."""
    from backout.backups.retention import prune

    try:
        prune(settings, ledger_conn, app, say)
    except Exception as exc:  # noqa: BLE001 - retention is housekeeping
        say(f"warning: retention (BACKOUT_KEEP) failed: {redact(str(exc), settings.secrets())}")


def _undo(app_conn: psycopg.Connection[Any], cp: CheckpointRow, adapter: Any,
          say: Callable[[str], None]) -> tuple[list[str], str]:
    """Undo the migrations the failed command applied in this run, from the saved down scripts.

    Those are the migrations that were pending at the checkpoint and are pending no longer (some
    tools, Alembic for one, record only the newest applied revision, so the applied lists cannot
    simply be compared). Then what the tool recorded of the migration that failed is cleared
    where it would stop the tool's next run.
    """
    from backout.migrations import DownMigrationError, SavedMigration

    saved = [SavedMigration.from_json(d) for d in cp["down_scripts"] or []]
    still_pending = {m.id for m in adapter.pending(app_conn)}
    new = [m for m in saved if m.id not in still_pending]
    undone: list[str] = []
    problem = ""
    if new:
        ids = ", ".join(m.id for m in new)
        say(f"undoing {len(new)} migration(s) the failed command applied: {ids}")
        try:
            # run_down takes them oldest first, as applied, and undoes them newest first.
            undone = adapter.run_down(app_conn, new, progress=say)
        except DownMigrationError as exc:
            undone, problem = exc.ran, f"{exc}; checkpoint {cp['id']} holds the database as it was"
        except Exception as exc:  # noqa: BLE001 - whatever broke, the release fails with the reason recorded
            reason = str(exc) if isinstance(exc, BackoutError) else f"{type(exc).__name__}: {exc}"
            problem = f"cannot undo {ids}: {reason}; checkpoint {cp['id']} holds the database as it was"
    try:  # Prisma, for one, refuses every later deploy while a failed migration is recorded (P3009)
        adapter.resolve_failed(app_conn, [m for m in saved if m.id in still_pending], progress=say)
    except (psycopg.Error, BackoutError) as exc:
        problem = "; ".join(filter(None, [problem, f"cannot clear the failed migration's record: {exc}"]))
    return undone, problem


def _run_only(settings: Settings, ledger_conn: LedgerConnection, argv: Sequence[str],
              say: Callable[[str], None]) -> int:
    status = _run_child(argv, say)
    if status != 0:
        say(f"the migrate command exited with status {status}: the release is not deployed")
        return status if 0 < status < 126 else 1
    schedule_watch(settings, ledger_conn, settings.app_name or "", settings.release_version, say)
    return 0


def _run_child(argv: Sequence[str], say: Callable[[str], None]) -> int:
    """Run the migrate command, relaying its output to ours line by line as it comes, with every
    secret backout knows masked (tools print the database URL they connect to, with its password)."""
    if not argv:
        say("no migrate command given (backout release -- CMD ...); nothing to run")
        return 0
    secrets = known_secrets()
    # Some tools take the database URL as an argument (migrate -database $DATABASE_URL): mask its password.
    say(f"running: {redact(' '.join(argv), secrets)}")
    try:
        child = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except FileNotFoundError:
        raise BackoutError(
            f"the migrate command {argv[0]!r} was not found; check the release line of the Procfile "
            "(give the command as words after --, or -- sh -c '...' for a shell line)"
        ) from None
    except PermissionError:
        raise BackoutError(f"the migrate command {argv[0]!r} is not executable") from None
    sys.stdout.flush()
    sys.stderr.flush()
    assert child.stdout is not None and child.stderr is not None
    relays = [relay(child.stdout, sys.stdout.buffer, secrets), relay(child.stderr, sys.stderr.buffer, secrets)]
    try:
        status = child.wait()
    except BaseException:
        child.terminate()
        child.wait()
        raise
    finally:
        for thread in relays:
            thread.join(5)  # its own children may hold the pipes open longer: not waited for
    say(f"migrate command exited with status {status}")
    return status if status >= 0 else 128 - status


def schedule_watch(settings: Settings, ledger_conn: LedgerConnection, app: str, version: int | None,
                   say: Callable[[str], None]) -> str | None:
    """Enqueue the post-deploy health watch of this release; returns the job id, or None with a
    warning when Redis is not configured or not reachable (a deploy does not fail for it)."""
    if not settings.redis_url:
        say("warning: REDIS_URL is not set: no post-deploy health watch is scheduled")
        return None
    import redis
    from rq import Queue
    from rq.exceptions import DuplicateJobError
    from rq.serializers import JSONSerializer

    from backout.defaults import JOB_RESULT_TTL
    from backout.redis_conn import connect
    from backout.worker.queues import ledger_queues

    routine_queue = ledger_queues(ledger_conn)[1]
    job_id = f"watch-{app}-v{version}"
    client = connect(settings.redis_url)
    # A Redis that does not answer must not hold up the release phase.
    client.connection_pool.connection_kwargs.update(socket_connect_timeout=5, socket_timeout=10)
    try:
        queue = Queue(routine_queue, connection=client, serializer=JSONSerializer)
        # By name, so that the hook never imports the job's code.
        queue.enqueue(HEALTH_JOB, app, version, job_id=job_id, unique=True,
                      result_ttl=JOB_RESULT_TTL, failure_ttl=JOB_RESULT_TTL,
                      description=f"health watch of {app} v{version}")
    except DuplicateJobError:
        say(f"health watch {job_id} was already scheduled")
    except (redis.RedisError, OSError) as exc:
        say(f"warning: could not schedule the health watch (Redis: {redact(str(exc), settings.secrets())}); "
            "the release goes ahead without it")
        return None
    finally:
        client.close()
    say(f"health watch {job_id} scheduled on {routine_queue}")
    return job_id


def terminated(signum: int, frame: object) -> None:
    """A SIGTERM handler: Heroku stops a release phase that runs too long with SIGTERM; turned into an
    exception, the checkpoint is marked failed on the way out instead of being left 'running'."""
    raise BackoutError("terminated by SIGTERM (Heroku stops a release phase after an hour)")
