"""The lines `backout rollback --wait` prints for the ledger's steps read as sentences."""

from __future__ import annotations

from backout.rollback.steps import describe


def step(name: str, status: str, detail: dict | None) -> dict:
    return {"step": name, "status": status, "detail": detail}


def test_steps_read_as_sentences() -> None:
    assert describe(step("plan", "done", {"noop": False, "target_version": 4, "current_version": 5, "steps": []})) \
        == "plan: done: roll back from v5 to v4"
    assert describe(step("plan", "done", {"noop": True, "target_version": 4, "current_version": 4, "steps": []})) \
        == "plan: done: v4 is what the app runs already; nothing to roll back"
    assert describe(step("code_rollback", "done", {"release_id": "b9c5", "release_version": 6})) \
        == "code_rollback: done: v6 made"
    assert describe(step("verify", "failed", {"problems": ["the app runs v5", "FOO differs"]})) \
        == "verify: failed: the app runs v5; FOO differs"


def test_progress_of_a_running_step_is_the_line_alone_never_started_and_done() -> None:
    line = describe(step("db_down", "started", {"progress": "undid 0002 from its saved down script"}))
    assert line == "db_down: undid 0002 from its saved down script"
    assert describe(step("db_restore", "started", {"progress": "restore: swapped; the app waited 0.021s"})) \
        == "db_restore: swapped; the app waited 0.021s"


def test_other_steps_and_older_rows_fall_back_to_their_fields() -> None:
    assert describe(step("lock", "done", None)) == "lock: done"
    assert describe(step("db_restore", "done", {"mode": "schema", "seconds": 1.1, "loss": {"rows": 3}})) \
        == "db_restore: done (mode schema, seconds 1.1)"
    assert describe(step("code_rollback", "done", {"release_version": 6, "found": "made by an earlier run"})) \
        == "code_rollback: done: v6 made (made by an earlier run)"
    assert describe(step("safety_checkpoint", "done", {"backup": "pg_dump"})) == "safety_checkpoint: done (backup pg_dump)"
