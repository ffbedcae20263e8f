"""How a rollback's ledger steps read to a person following it (`backout rollback --wait`).

A step is a ledger row: a name (`plan`, `safety_checkpoint`, `db_down`, `db_restore`,
`code_rollback`, `release_phase`, `verify`, ...), a status (`started`, `done`, `failed`,
`skipped`) and a detail document. Each becomes one sentence: `code_rollback: done: v6 made, a
rollback to v4`. A long step's progress (recorded as `started` with a `progress` line) reads as
that line alone, so a step says "done" only when it is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # this module stays light: `backout rollback --wait` renders with it
    from backout.ledger.records import StepRow


def describe(step: StepRow) -> str:
    name, status = step["step"], step["status"]
    detail: dict[str, Any] = step["detail"] or {}
    if status == "started" and set(detail) == {"progress"}:
        return f"{name}: {_progress(name, str(detail['progress']))}"
    sentence = _SENTENCES.get((name, status))
    if sentence is not None:
        try:
            return f"{name}: {status}: {sentence(detail)}"
        except KeyError:  # an older row without the field: fall back to the plain form
            pass
    shown = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in detail.items()
                      if v is not None and not isinstance(v, (dict, list)))
    return f"{name}: {status}" + (f" ({shown})" if shown else "")


def _progress(name: str, line: str) -> str:
    # Progress lines of the restore say "restore: ..." already; the step's name says it once.
    head, sep, rest = line.partition(": ")
    return rest if sep and head in name else line


def _plan(d: dict[str, Any]) -> str:
    if d["noop"]:
        return f"v{d['target_version']} is what the app runs already; nothing to roll back"
    return f"roll back from v{d['current_version']} to v{d['target_version']}"


_SENTENCES: dict[tuple[str, str], Any] = {
    ("plan", "done"): _plan,
    ("safety_checkpoint", "started"): lambda d: f"taking a {d['backup']} checkpoint of the database as it is now",
    ("safety_checkpoint", "done"): lambda d: f"{d['checkpoint_id']} ({d['backup']}) holds the database as it was",
    ("db_down", "started"): lambda d: f"undoing migrations back to checkpoint {d['restore_point']}",
    ("db_restore", "started"): lambda d: f"restoring checkpoint {d['restore_point']}",
    ("code_rollback", "started"): lambda d: f"rolling the code and config back from v{d['from_version']} "
                                            f"to v{d['target_version']}",
    ("code_rollback", "done"): lambda d: f"v{d['release_version']} made" + (f" ({d['found']})" if d.get("found") else ""),
    ("release_phase", "started"): lambda d: f"v{d['release_version']}'s release phase running",
    ("release_phase", "done"): lambda d: f"v{d['release_version']}'s release phase succeeded",
    ("verify", "done"): lambda d: f"the app runs v{d['release_version']} with the target's slug and config vars",
    ("verify", "failed"): lambda d: "; ".join(d["problems"]),
}
