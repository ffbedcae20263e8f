"""Database rollback: restore a checkpoint's backup, or run the down migrations it saved.

    from backout.rollback.database.step import plan_db_step, run_db_step
    step = plan_db_step(settings, ledger_conn, app, target_checkpoint, "restore", target_version=41)
    result = run_db_step(settings, request_id, step, progress)   # in the worker, under the app lock

`step` plans and runs the step; `restore` restores each kind of backup (`swap` does the pg_dump
kind beside the live data); `down` runs saved down scripts; `ledger_copy` keeps the ledger current
when a restore replaces the database it lives in; `leftovers` drops what a restored checkpoint did
not hold; `loss` estimates what a rollback discards.
(Nothing is imported here, so a module of this package loads only what it needs.)
"""
