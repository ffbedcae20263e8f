"""The git side of a package rollback, done with git itself in a real checkout.

All edits happen in temporary worktrees (`git worktree add --detach`), so the person's own working
tree, index and branches are never touched; only the new tag lands in their repository as a ref.
A token, when backout clones by itself, reaches git through the environment (`GIT_CONFIG_*`), never
through the command line.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import urlsplit

from backout.errors import BackoutError, BadInput

FALLBACK_IDENTITY = {"name": "backout", "email": "backout@users.noreply.github.com"}
# Pushes refused for these reasons are retried after a fresh fetch; any other refusal is final.
_RACES = ("fetch first", "non-fast-forward", "stale info")


class GitError(BackoutError):
    """A git command failed."""


class Git:
    """git in one repository, never prompting, with extra environment (credentials, identity)."""

    def __init__(self, path: Path, env: dict[str, str] | None = None) -> None:
        self.path = path
        self.env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C", **(env or {})}

    def run(self, *args: str, cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(["git", *args], cwd=cwd or self.path, capture_output=True, text=True, env=self.env)
        if check and result.returncode != 0:
            raise GitError(f"git {args[0]} failed in {cwd or self.path}: {result.stderr.strip() or result.stdout.strip()}")
        return result

    def out(self, *args: str, cwd: Path | None = None) -> str:
        return self.run(*args, cwd=cwd).stdout.strip()


def auth_env(url: str, token: str | None) -> dict[str, str]:
    """Environment that makes git send `token` to the host of an https `url` (and nowhere else)."""
    parts = urlsplit(url)
    if not token or parts.scheme != "https":
        return {}
    basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
    return {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": f"http.{parts.scheme}://{parts.netloc}/.extraHeader",
            "GIT_CONFIG_VALUE_0": f"Authorization: Basic {basic}"}


def open_checkout(path: str) -> Git:
    """A person's existing checkout (its `origin` is where the rollback is pushed)."""
    where = Path(path).expanduser().resolve()
    git = Git(where)
    if not where.is_dir() or git.run("rev-parse", "--is-inside-work-tree", check=False).stdout.strip() != "true":
        raise BadInput(f"--checkout {path} is not a git checkout; give the path of a clone of the repository")
    if git.run("remote", "get-url", "origin", check=False).returncode != 0:
        raise BadInput(f"--checkout {path} has no remote called origin; add the GitHub repository as origin")
    return Git(Path(git.out("rev-parse", "--show-toplevel")))


def clone(url: str, dest: Path, token: str | None) -> Git:
    """A fresh clone without a working tree, for a worker that has no checkout of its own."""
    env = auth_env(url, token)
    # Blobs are fetched when a worktree needs them: a big history costs little.
    Git(dest.parent, env).run("clone", "--quiet", "--no-checkout", "--filter=blob:none", url, str(dest))
    return Git(dest, env)


def dirty_paths(git: Git, paths: list[str]) -> list[str]:
    """Which of `paths` have uncommitted changes (staged or not) in the checkout."""
    lines = git.out("status", "--porcelain", "--", *paths).splitlines()
    return [line[3:] for line in lines if line.strip()]


def fetch(git: Git, ref: str) -> str | None:
    """Fetch `refs/...` from origin into FETCH_HEAD (no local ref is changed); the object it names,
    or None when origin has no such ref."""
    result = git.run("fetch", "--quiet", "--no-tags", "--no-write-fetch-head", "origin", ref, check=False)
    if result.returncode != 0:
        if "couldn't find remote ref" in result.stderr:
            return None
        raise GitError(f"git fetch {ref} from origin failed: {result.stderr.strip()}")
    # --no-write-fetch-head keeps FETCH_HEAD of the person's checkout; ask origin what it named.
    return remote_ref(git, ref)


def remote_ref(git: Git, ref: str) -> str | None:
    """The object `ref` names on origin (ls-remote), or None."""
    for line in git.out("ls-remote", "origin", ref).splitlines():
        sha, _, name = line.partition("\t")
        if name == ref:
            return sha
    return None


def peel(git: Git, obj: str) -> str:
    return git.out("rev-parse", f"{obj}^{{commit}}")


def identity_env(git: Git) -> dict[str, str]:
    """Author and committer for backout's commits: the checkout's own, else backout's."""
    if git.run("config", "user.email", check=False).stdout.strip():
        return {}
    name, email = FALLBACK_IDENTITY["name"], FALLBACK_IDENTITY["email"]
    return {"GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email, "GIT_COMMITTER_NAME": name,
            "GIT_COMMITTER_EMAIL": email}


@contextmanager
def worktree(git: Git, commit: str) -> Iterator[Path]:
    """A temporary detached worktree at `commit`, removed afterwards."""
    parent = Path(tempfile.mkdtemp(prefix="backout-worktree-"))
    path = parent / "tree"
    git.run("worktree", "add", "--quiet", "--detach", str(path), commit)
    try:
        yield path
    finally:
        git.run("worktree", "remove", "--force", str(path), check=False)
        git.run("worktree", "prune", check=False)
        shutil.rmtree(parent, ignore_errors=True)


def commit_all(git: Git, tree: Path, paths: list[str], message: str) -> str:
    """Commit `paths` in `tree`; hooks are skipped (a rollback must not wait on a local linter)."""
    env = identity_env(git)
    runner = Git(git.path, {**git.env, **env})
    runner.run("add", "--", *paths, cwd=tree)
    runner.run("commit", "--quiet", "--no-verify", "-m", message, cwd=tree)
    return runner.out("rev-parse", "HEAD", cwd=tree)


def tag(git: Git, tree: Path, name: str, message: str) -> str:
    """An annotated tag on the tree's HEAD (replacing a local one left by an earlier attempt)."""
    runner = Git(git.path, {**git.env, **identity_env(git)})
    runner.run("tag", "--force", "--annotate", name, "--message", message, cwd=tree)
    return runner.out("rev-parse", f"refs/tags/{name}", cwd=tree)


def push(git: Git, tree: Path, refspecs: list[str], atomic: bool = True) -> tuple[bool, str]:
    """Push to origin; (True, "") or (False, why). With `atomic`, all refs land or none do."""
    args = ["push", "--porcelain", "--no-verify"] + (["--atomic"] if atomic else []) + ["origin", *refspecs]
    result = git.run(*args, cwd=tree, check=False)
    if result.returncode == 0:
        return True, ""
    rejected = [line.replace("\t", " ") for line in result.stdout.splitlines() if line.startswith("!")]
    # What the server said (a hook's message, a protection rule) comes as "remote:" lines.
    remote = [line[len("remote:"):].strip() for line in result.stderr.splitlines() if line.startswith("remote:")]
    return False, "; ".join(rejected + [line for line in remote if line]) or result.stderr.strip()


def is_race(why: str) -> bool:
    return any(reason in why for reason in _RACES)


def commit_to_branch(git: Git, branch: str, files: dict[str, Callable[[str], str]], message: str,
                     fallback: str, attempts: int = 3) -> dict[str, Any]:
    """Apply `files` edits (path -> edit of its text) on top of origin's `branch` and push.

    A push that lost a race is redone on the new tip. One refused for another reason (a protected
    branch, a hook) goes to branch `fallback` instead, for a pull request. Returns what happened.
    """
    why = ""
    for _ in range(attempts):
        base = fetch(git, f"refs/heads/{branch}")
        if base is None:
            raise GitError(f"origin has no branch {branch}")
        with worktree(git, base) as tree:
            changed = []
            for path, edit in files.items():
                target = tree / path
                text = target.read_text() if target.exists() else ""
                new = edit(text)
                if new != text:
                    target.write_text(new)
                    changed.append(path)
            if not changed:
                return {"branch": branch, "commit": base, "changed": False}
            commit = commit_all(git, tree, changed, message)
            ok, why = push(git, tree, [f"HEAD:refs/heads/{branch}"], atomic=False)
            if ok:
                return {"branch": branch, "commit": commit, "changed": True}
            if is_race(why):
                continue
            ok, fallback_why = push(git, tree, [f"+HEAD:refs/heads/{fallback}"], atomic=False)
            if not ok:
                raise GitError(f"origin refused {branch} ({why}) and {fallback} ({fallback_why})")
            return {"branch": fallback, "commit": commit, "changed": True, "refused_by": branch, "why": why}
    raise GitError(f"origin's {branch} kept moving while pushing ({why}); rerun to try again")
