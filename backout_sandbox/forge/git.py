"""git, on the bare repositories that stand for GitHub's git storage."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from backout_sandbox.core.errors import SandboxError

ZERO_SHA = "0" * 40


class GitFailed(SandboxError):
    pass


def git(git_dir: str, *args: str, input: bytes | None = None) -> bytes:
    result = subprocess.run(
        ["git", f"--git-dir={git_dir}", *args], input=input, capture_output=True,
        env={**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"},
    )
    if result.returncode != 0:
        raise GitFailed(result.stderr.decode(errors="replace").strip())
    return result.stdout


def refs(git_dir: str) -> list[tuple[str, str, str]]:
    """(refname, objecttype, sha) of every ref, sorted by name."""
    out = git(git_dir, "for-each-ref", "--format=%(refname)%00%(objecttype)%00%(objectname)")
    found = []
    for line in out.decode().splitlines():
        if line:
            refname, kind, sha = line.split("\0")
            found.append((refname, kind, sha))
    return sorted(found)


def has_ref(git_dir: str, refname: str) -> bool:
    return any(r == refname for r, _, _ in refs(git_dir))


def resolve_commit(git_dir: str, rev: str) -> str | None:
    try:
        return git(git_dir, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}").decode().strip() or None
    except GitFailed:
        return None


def ls_tree(git_dir: str, commit: str, path: str | None) -> list[tuple[str, str, str, int]]:
    """(path, kind, sha, size) of the tree entries at `path` (a trailing slash lists inside it)."""
    args = ["ls-tree", "-l", "-z", commit] + (["--", path] if path else [])
    entries = []
    for item in git(git_dir, *args).decode().split("\0"):
        if item:
            meta, _, item_path = item.partition("\t")
            _mode, kind, sha, size = meta.split()
            entries.append((item_path, kind, sha, 0 if size == "-" else int(size)))
    return entries


def object_type(git_dir: str, sha: str) -> str | None:
    if not re.fullmatch(r"[0-9a-f]{40}", sha):
        return None
    try:
        return git(git_dir, "cat-file", "-t", sha).decode().strip()
    except GitFailed:
        return None


def run_in(cwd: Path, *args: str) -> str:
    """git in a working checkout, as its author Alice (the demo package's commits and tags)."""
    env = {**os.environ, "GIT_AUTHOR_NAME": "Alice", "GIT_AUTHOR_EMAIL": "alice@example.com",
           "GIT_COMMITTER_NAME": "Alice", "GIT_COMMITTER_EMAIL": "alice@example.com", "GIT_TERMINAL_PROMPT": "0"}
    result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise GitFailed(f"git {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout
