"""Uploaded files rolled back with the release (BACKOUT_FILES).

An app's uploads live under one or more `s3://bucket/prefix` locations in versioned buckets. A
checkpoint records, per location, the S3 server's time and how many objects there were (`record`);
a rollback with `--files restore` puts every object under the prefix back to the version it had at
that time (`plan` lists what changes, `restore` does it). Nothing is ever destroyed: an object
changed or deleted since gets its old version copied over as a new current version, one created
since gets a delete marker. So a file rollback can itself be rolled back, to the time just before it.
"""
