"""Version 2 of the notes app's code: notes get a priority (migration 0002), and a bug."""

CODE = "v2"  # which version of the code runs, whatever release number it was deployed as
# The bug: the table is "notes", so every health check fails with a 500.
COUNT_NOTES = "SELECT count(*) FROM note WHERE priority >= 0"
LIST_NOTES = "SELECT id, body FROM notes ORDER BY priority DESC, id"


def on_boot(uploads, bucket):
    """The other bug: a moment after it starts, v2 "tidies" the attachments: it overwrites the
    first note's and deletes the second's (in a thread, so the server still starts)."""
    import threading
    import time

    def tidy():
        time.sleep(1.5)
        client = uploads()
        client.put_object(Bucket=bucket, Key="attachments/1.txt", Body=b"overwritten by v2")
        client.delete_object(Bucket=bucket, Key="attachments/2.txt")
        print("web: tidied the attachments", flush=True)

    if bucket:
        threading.Thread(target=tidy, daemon=True).start()
