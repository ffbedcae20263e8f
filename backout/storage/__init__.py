"""Object storage (S3 and S3-compatible services) for checkpoint archives: settings (`config`), the
client (`client`), streaming multipart uploads (`upload`), parallel ranged reads (`download`), and
the archives' keys, checks, deletion and the sweep of abandoned uploads (`archives`)."""
