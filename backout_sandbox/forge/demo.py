"""A demo package whose last release is bad, for tests and rehearsals of `backout package-rollback`."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from backout_sandbox.forge.git import run_in
from backout_sandbox.forge.server import Forge

DEMO_REPO = "acme/widgets"
DEMO_TOKEN = "ghp_sandboxdemotoken0000000000000000000000"


def demo_package(forge: Forge, workdir: str | Path, *, repo: str = DEMO_REPO, project: str = "widgets",
                 versions: tuple[str, ...] = ("1.2.0", "1.2.1", "1.2.2", "1.2.3"),
                 token: str = DEMO_TOKEN) -> dict[str, Any]:
    """A package whose last release is bad: a bare repository standing for GitHub's copy, a
    working checkout of it, a tag, a GitHub release and PyPI files for each version, and a classic
    token with the `repo` scope. Returns where everything is."""
    workdir = Path(workdir).resolve()
    bare, checkout = workdir / "remote.git", workdir / "checkout"
    owner = repo.split("/")[0]
    subprocess.run(["git", "init", "--quiet", "--bare", "--initial-branch=main", str(bare)], check=True)
    subprocess.run(["git", "init", "--quiet", "--initial-branch=main", str(checkout)], check=True)
    run_in(checkout, "remote", "add", "origin", str(bare))
    package = checkout / "src" / project
    package.mkdir(parents=True)
    (package / "__init__.py").write_text('"""The widgets library."""\n')
    changelog: list[str] = []
    for number, version in enumerate(versions):
        bad = number == len(versions) - 1
        (checkout / "pyproject.toml").write_text(
            f'[build-system]\nrequires = ["setuptools>=77"]\nbuild-backend = "setuptools.build_meta"\n\n'
            f'[project]\nname = "{project}"\nversion = "{version}"\ndescription = "Widgets for everyone"\n'
            f'requires-python = ">=3.9"\n'
        )
        (package / "core.py").write_text(
            "def spin(n):\n    return n * 2\n" if not bad else "def spin(n):\n    return n / 0  # oops\n"
        )
        change = "Faster spinning (it divides by zero)" if bad else f"Improvements in {version}"
        changelog[0:0] = [f"## [{version}] - 2024-{number + 1:02d}-15\n", "\n", "### Changed\n", "\n", f"- {change}\n", "\n"]
        links = [f"[{v}]: https://github.com/{repo}/releases/tag/v{v}\n" for v in reversed(versions[: number + 1])]
        (checkout / "CHANGELOG.md").write_text(
            "# Changelog\n\nAll notable changes to this project are documented in this file.\n\n"
            "The format is based on [Keep a Changelog](https://keepachangelog.com/en/1.1.0/),\n"
            "and this project adheres to [Semantic Versioning](https://semver.org/spec/v2.0.0.html).\n\n"
            "## [Unreleased]\n\n" + "".join(changelog) + "".join(links)
        )
        run_in(checkout, "add", "-A")
        run_in(checkout, "commit", "--quiet", "-m", f"Release {version}")
        run_in(checkout, "tag", "-a", f"v{version}", "-m", f"Release {version}")
    run_in(checkout, "push", "--quiet", "origin", "main", "--tags")
    forge.add_repo(repo, git_dir=bare, owner=owner, publishes={"project": project, "tag_prefix": "v"})
    forge.add_token(token, login=owner, scopes=["repo", "workflow"])
    for version in versions:
        forge.add_release(repo, f"v{version}", name=version, body=f"Release notes of {version}.")
    forge.pypi_project(project)  # the release workflow has uploaded every tag
    return {"repo": repo, "project": project, "bare": str(bare), "checkout": str(checkout), "token": token,
            "bad": versions[-1], "good": versions[-2]}
