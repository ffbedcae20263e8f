"""Deploying a directory through the Platform API, the way `git push heroku main` ends up doing it.

`deploy(client, app, directory)` reads the directory's Procfile for the process types, packs the
directory into a slug (a gzipped tarball of `./app/...`, which the app's dynos run from), creates
the slug, uploads it to the blob URL Heroku hands out, creates the release, follows the release
phase's output and returns the release once its status is final. There is no build: the directory
is the app as its dynos run it (which is what the sandbox runs; on Heroku a slug needs its
dependencies compiled in). `create_app` makes an app with add-ons, as `heroku apps:create` and
`heroku addons:create` would.
"""

from __future__ import annotations

import hashlib
import io
import re
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from backout.errors import BackoutError, BadInput
from backout.heroku import HerokuClient

# Heroku's Procfile: `<process type>: <command>`, one per line.
_PROCFILE_LINE = re.compile(r"^([A-Za-z0-9_-]+):\s*(.+)$")
# What a git push leaves out of a slug, plus what a local run leaves behind.
SKIPPED = frozenset((".git", "__pycache__", ".venv", ".backout"))

Output = Callable[[str], None]


@dataclass(frozen=True)
class Slug:
    tarball: bytes
    process_types: dict[str, str]
    files: int
    checksum: str  # SHA256:<hex>, as the Platform API takes it
    commit: str | None


def process_types(procfile: Path) -> dict[str, str]:
    """The Procfile's process types and their commands (blank lines and comments skipped)."""
    types: dict[str, str] = {}
    for number, line in enumerate(procfile.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        found = _PROCFILE_LINE.match(line.strip())
        if not found:
            raise BadInput(f"{procfile}:{number} is not `<process type>: <command>`; fix that line")
        types[found[1]] = found[2].strip()
    if not types:
        raise BadInput(f"{procfile} names no process types; add a line such as `web: python app.py`")
    return types


def app_files(directory: Path) -> dict[str, Path]:
    """The files of the app in `directory`, by path relative to it (without .git, caches and virtualenvs)."""
    return {path.relative_to(directory).as_posix(): path for path in sorted(directory.rglob("*"))
            if path.is_file() and not SKIPPED.intersection(path.relative_to(directory).parts)}


def tarball(files: Mapping[str, Path]) -> bytes:
    """The files under ./app/, gzipped: the layout Heroku unpacks a slug to."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for relative, path in sorted(files.items()):
            info = tar.gettarinfo(path, arcname=f"./app/{relative}")
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            with open(path, "rb") as data:
                tar.addfile(info, data)
    return buffer.getvalue()


def pack(directory: Path) -> Slug:
    """The directory as a slug, with the process types of its Procfile."""
    directory = directory.resolve()
    if not directory.is_dir():
        raise BadInput(f"{directory} is not a directory; give the app's directory (the one with its Procfile)")
    if not (directory / "Procfile").is_file():
        raise BadInput(f"{directory} has no Procfile; add one with a line per process type, e.g. `web: python app.py`")
    files = app_files(directory)
    packed = tarball(files)
    return Slug(packed, process_types(directory / "Procfile"), len(files),
                "SHA256:" + hashlib.sha256(packed).hexdigest(), _commit(directory))


def _commit(directory: Path) -> str | None:
    """The commit the directory is at, when it is a git checkout (a release's `Deploy <commit>`)."""
    try:
        done = subprocess.run(["git", "-C", str(directory), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    commit = done.stdout.strip()
    return commit if done.returncode == 0 and re.fullmatch(r"[0-9a-f]{40}", commit) else None


def deploy(client: HerokuClient, app: str, directory: Path, say: Output, release_output: Output) -> dict[str, Any]:
    """Deploy the directory as a new release of `app`; the release once its release phase ended
    (its `status` says how). `say` hears the steps, `release_output` the release phase's lines."""
    slug = pack(directory)
    types = ", ".join(sorted(slug.process_types))
    say(f"Packed {directory} into a slug: {slug.files} files, {len(slug.tarball):,} bytes (process types: {types})")
    made = client.create_slug(app, slug.process_types, commit=slug.commit, checksum=slug.checksum)
    client.upload_slug(made["blob"]["url"], slug.tarball)
    release = client.create_release(app, made["id"])
    say(f"Created release v{release['version']} ({release['description']})")
    if release.get("status") == "pending" and release.get("output_stream_url"):
        say("Running release command...")
        for line in client.release_output(release["output_stream_url"]):
            release_output(line)
    return client.wait_release(app, release["id"])


def create_app(client: HerokuClient, name: str, plans: Sequence[str], say: Output) -> dict[str, Any]:
    """Create the app, then each add-on (`heroku-postgresql:essential-0`); the app."""
    app = client.create_app(name)
    say(f"Created {app['name']}, served at {app['web_url']}")
    for plan in plans:
        addon = client.create_addon(app["name"], plan)
        names = ", ".join(addon.get("config_vars") or [])
        say(f"Created {addon['name']} ({addon['plan']['name']})" + (f" as {names}" if names else ""))
        if addon.get("state") != "provisioned":
            raise BackoutError(f"add-on {addon['name']} is {addon.get('state')}; wait for it with `heroku addons:wait`")
    return app
