"""The demo app's versions as Heroku slugs: process types from each version's Procfile, and the code
as a gzipped tarball of `./app/...`, the layout Heroku unpacks to /app."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

from ..errors import BackoutError

APP_ROOT = Path(__file__).parent / "app"


def version_dir(version: str) -> Path:
    """The directory of one version of the demo app (v1, v2)."""
    path = APP_ROOT / version
    if not (path / "Procfile").is_file():
        raise BackoutError(f"the demo app's {version} is missing from {APP_ROOT}; reinstall backout")
    return path


def process_types(app_dir: Path) -> dict[str, str]:
    """The Procfile's `type: command` lines (blank lines and comments skipped)."""
    types: dict[str, str] = {}
    for number, line in enumerate((app_dir / "Procfile").read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, command = line.partition(":")
        if not sep or not name.strip() or not command.strip():
            raise BackoutError(f"{app_dir / 'Procfile'} line {number} is not `type: command`: {line!r}")
        types[name.strip()] = command.strip()
    return types


def tarball(app_dir: Path) -> bytes:
    """The files of `app_dir` under ./app/, without byte-code caches."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in sorted(app_dir.rglob("*")):
            relative = path.relative_to(app_dir)
            if "__pycache__" in relative.parts or path.suffix == ".pyc":
                continue
            tar.add(path, arcname=f"./app/{relative.as_posix()}", recursive=False)
    return buffer.getvalue()
