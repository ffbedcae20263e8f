"""The app's own migrate command: runs the SQL files in migrations/ that have not run yet, in name
order, each in a transaction, and records them in the table `migrations`."""

import os
from pathlib import Path

import psycopg

with psycopg.connect(os.environ["DATABASE_URL"]) as conn:
    conn.execute("CREATE TABLE IF NOT EXISTS migrations (name text PRIMARY KEY, ran_at timestamptz DEFAULT now())")
    done = {name for (name,) in conn.execute("SELECT name FROM migrations")}
    conn.commit()
    for path in sorted(Path("migrations").glob("*.sql")):
        if path.name not in done:
            with conn.transaction():
                conn.execute(path.read_text())
                conn.execute("INSERT INTO migrations (name) VALUES (%s)", (path.name,))
            print(f"migrated: {path.name}")
