"""Slug blobs: the gzipped tarball of `./app/...` a client PUTs to the slug's blob URL.

Heroku unpacks a slug to /app and runs every dyno there. The sandbox unpacks each uploaded slug
into a directory of its own, so every release really runs its own code; a slug whose blob was
never uploaded runs in an empty directory.
"""

from __future__ import annotations

import hashlib
import shutil
import tarfile
import tempfile
from pathlib import Path, PurePosixPath
from typing import IO, Callable


class BadSlug(ValueError):
    """The uploaded blob is not a slug tarball; the message says why."""


class SlugFiles:
    def __init__(self, root: Path) -> None:
        self.root = root

    def app_dir(self, slug_id: str) -> Path:
        """The working directory of the slug's dynos (created empty if no blob was uploaded)."""
        path = self.root / slug_id / "app"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def blob_path(self, slug_id: str) -> Path:
        return self.root / f"{slug_id}.tgz"

    def receive(self, slug_id: str, copy_body: Callable[[IO[bytes]], int], checksum: str | None) -> tuple[int, str]:
        """Store and unpack an uploaded blob; (size, "SHA256:<hex>"). Raises BadSlug, leaving the
        slug as it was, when the blob is not a gzipped tar of ./app or its checksum differs."""
        self.root.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=self.root, prefix=f".{slug_id}.", suffix=".tgz", delete=False) as out:
            size = copy_body(out)
        blob = Path(out.name)
        try:
            digest = "SHA256:" + _sha256(blob)
            if checksum and checksum.lower() != digest.lower():
                raise BadSlug(f"the blob's checksum is {digest}, but the slug was created with {checksum}")
            unpacked = Path(tempfile.mkdtemp(dir=self.root, prefix=f".{slug_id}."))
            try:
                _unpack(blob, unpacked)
                target = self.root / slug_id
                shutil.rmtree(target, ignore_errors=True)
                unpacked.rename(target)
            except BaseException:
                shutil.rmtree(unpacked, ignore_errors=True)
                raise
            blob.rename(self.blob_path(slug_id))
        finally:
            blob.unlink(missing_ok=True)
        return size, digest


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _unpack(blob: Path, into: Path) -> None:
    try:
        with tarfile.open(blob, "r:gz") as tar:
            members = tar.getmembers()
            for member in members:
                parts = PurePosixPath(member.name).parts
                parts = parts[1:] if parts[:1] == (".",) else parts
                if parts[:1] != ("app",):
                    raise BadSlug(f"the slug tarball holds {member.name!r}; every path must be under ./app/")
            # The "data" filter refuses absolute paths, links out of the tree and device files.
            tar.extractall(into, members=members, filter="data")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BadSlug(f"the blob is not a gzipped tar of ./app ({exc})") from None
    app = into / "app"
    if app.exists() and not app.is_dir():
        raise BadSlug("the slug tarball's ./app is a file; it must be the directory holding the app")
    app.mkdir(exist_ok=True)
