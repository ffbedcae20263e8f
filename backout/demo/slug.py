"""The demo app's versions as Heroku slugs: process types from each version's Procfile, and the code
as a gzipped tarball of `./app/...`, the layout Heroku unpacks to /app."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

from backout.errors import BackoutError

APP_ROOT = Path(__file__).parent / "app"


def version_files(version: str) -> dict[str, Path]:
    """The files of one version of the demo app (v1, v2): the code all versions share (`common`),
    overlaid with what that version changes, by path relative to the app's root."""
    own = APP_ROOT / version
    if version == "common" or not own.is_dir():
        raise BackoutError(f"the demo app has no version {version!r} in {APP_ROOT}; reinstall backout")
    files: dict[str, Path] = {}
    for root in (APP_ROOT / "common", own):
        for path in sorted(root.rglob("*")):
            relative = path.relative_to(root)
            if path.is_file() and "__pycache__" not in relative.parts and path.suffix != ".pyc":
                files[relative.as_posix()] = path
    return files


def process_types(files: dict[str, Path]) -> dict[str, str]:
    """The Procfile's `type: command` lines (blank lines and comments skipped)."""
    if "Procfile" not in files:
        raise BackoutError("the demo app's version has no Procfile; reinstall backout")
    procfile = files["Procfile"]
    types: dict[str, str] = {}
    for number, line in enumerate(procfile.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, command = line.partition(":")
        if not sep or not name.strip() or not command.strip():
            raise BackoutError(f"{procfile} line {number} is not `type: command`: {line!r}")
        types[name.strip()] = command.strip()
    return types


def tarball(files: dict[str, Path]) -> bytes:
    """The files under ./app/, the layout Heroku unpacks a slug to."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for relative, path in sorted(files.items()):
            tar.add(path, arcname=f"./app/{relative}", recursive=False)
    return buffer.getvalue()
