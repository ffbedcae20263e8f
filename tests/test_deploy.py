"""`backout sandbox create` and `backout sandbox deploy`, and the library under them (backout.deploy):
a directory with its Procfile packed into a slug and released through the sandbox's Platform API."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

from backout import deploy
from backout.errors import BadInput
from tests.support import SandboxApi

PROCFILE = "# the processes\nrelease: python migrate.py\n\nweb:   python web.py  \n"


def app_dir(tmp_path: Path, procfile: str = PROCFILE) -> Path:
    root = tmp_path / "app"
    (root / "lib" / "__pycache__").mkdir(parents=True)
    (root / ".git").mkdir()
    (root / "Procfile").write_text(procfile)
    (root / "migrate.py").write_text("print('migrated')\n")
    (root / "lib" / "util.py").write_text("X = 1\n")
    (root / "lib" / "__pycache__" / "util.cpython-311.pyc").write_bytes(b"\0")
    (root / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    return root


def test_a_directory_becomes_a_slug_of_its_files_and_procfile(tmp_path: Path) -> None:
    slug = deploy.pack(app_dir(tmp_path))
    assert slug.process_types == {"release": "python migrate.py", "web": "python web.py"}
    with tarfile.open(fileobj=io.BytesIO(slug.tarball)) as tar:
        assert sorted(tar.getnames()) == ["./app/Procfile", "./app/lib/util.py", "./app/migrate.py"]
        assert {(m.uid, m.uname) for m in tar.getmembers()} == {(0, "")}
    assert slug.files == 3 and slug.checksum.startswith("SHA256:") and slug.commit is None


def test_the_commit_of_a_git_checkout_names_the_deploy(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    (root / "Procfile").write_text("web: python web.py\n")
    git = ["git", "-C", str(root), "-c", "user.email=t@example.com", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "first"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    assert deploy.pack(root).commit == head


@pytest.mark.parametrize("procfile, problem", [
    (None, "has no Procfile"),
    ("# nothing\n", "names no process types"),
    ("web python web.py\n", "Procfile:1 is not `<process type>: <command>`"),
])
def test_a_directory_without_a_usable_procfile_is_bad_input(tmp_path: Path, procfile: str | None, problem: str) -> None:
    root = app_dir(tmp_path)
    if procfile is None:
        (root / "Procfile").unlink()
    else:
        (root / "Procfile").write_text(procfile)
    with pytest.raises(BadInput, match=problem):
        deploy.pack(root)
    with pytest.raises(BadInput, match="is not a directory"):
        deploy.pack(root / "missing")


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "backout", "sandbox", *args], env=env, text=True,
                          capture_output=True, timeout=120)


@pytest.mark.integration
def test_create_and_deploy_through_the_platform_api(sandbox: Any, tmp_path: Path) -> None:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("BACKOUT_", "HEROKU_"))}, **sandbox.env}
    created = run(env, "create", "sbx-deploy", "--addon", "heroku-postgresql:essential-0")
    assert created.returncode == 0, created.stderr
    assert "-----> Created sbx-deploy, served at http://127.0.0.1:" in created.stdout
    assert "(heroku-postgresql:essential-0) as DATABASE_URL" in created.stdout
    root = app_dir(tmp_path, "release: python migrate.py\nworker: sleep 600\n")
    done = run(env, "deploy", "--app", "sbx-deploy", str(root))
    assert done.returncode == 0, done.stderr
    assert "-----> Running release command...\n       migrated\n" in done.stdout, done.stdout
    assert "-----> v3 succeeded: http://127.0.0.1:" in done.stdout
    api = SandboxApi(sandbox)
    release = api.ok("GET", "/apps/sbx-deploy/releases/3")
    slug = api.ok("GET", f"/apps/sbx-deploy/slugs/{release['slug']['id']}")
    assert slug["process_types"] == {"release": "python migrate.py", "worker": "sleep 600"}

    (root / "migrate.py").write_text("raise SystemExit('the migration failed')\n")
    failed = run(env, "deploy", "--app", "sbx-deploy", str(root))
    assert failed.returncode == 1 and "       the migration failed\n" in failed.stdout, failed.stdout
    assert "-----> v4 failed: the release phase did not succeed, so sbx-deploy stays on its current release" \
        in failed.stdout

    missing = run(env, "deploy", "--app", "sbx-deploy", str(tmp_path / "nowhere"))
    assert (missing.returncode, missing.stdout) == (2, "")
    assert "is not a directory" in missing.stderr
    not_pointed = run({k: v for k, v in env.items() if k != "BACKOUT_HEROKU_API_URL"}, "create", "sbx-elsewhere")
    assert not_pointed.returncode == 2
    assert "BACKOUT_HEROKU_API_URL is not set, so this would go to Heroku itself" in not_pointed.stderr
