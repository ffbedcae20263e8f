"""The demo app's versions as Heroku slugs: each version's files (the common code overlaid with the
version's own) and the process types of its Procfile; `backout.deploy.tarball` packs them."""

from __future__ import annotations

from pathlib import Path

from backout import deploy
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
    """The version's Procfile's `type: command` lines."""
    if "Procfile" not in files:
        raise BackoutError("the demo app's version has no Procfile; reinstall backout")
    return deploy.process_types(files["Procfile"])

