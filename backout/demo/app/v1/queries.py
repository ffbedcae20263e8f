"""Version 1 of the notes app's code."""

CODE = "v1"  # which version of the code runs, whatever release number it was deployed as
COUNT_NOTES = "SELECT count(*) FROM notes"
LIST_NOTES = "SELECT id, body FROM notes ORDER BY id"


def on_boot(uploads, bucket):
    """Nothing to do when the web dyno starts."""
