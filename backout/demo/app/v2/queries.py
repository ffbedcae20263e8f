"""Version 2 of the notes app's code: notes get a priority (migration 0002), and a bug."""

CODE = "v2"  # which version of the code runs, whatever release number it was deployed as
# The bug: the table is "notes", so every health check fails with a 500.
COUNT_NOTES = "SELECT count(*) FROM note WHERE priority >= 0"
LIST_NOTES = "SELECT id, body FROM notes ORDER BY priority DESC, id"
