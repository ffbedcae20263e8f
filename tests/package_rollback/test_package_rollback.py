"""`backout package-rollback` end to end: the forge sandbox, a real git checkout with a bare remote
standing for GitHub's, the ledger in a real PostgreSQL, a real webhook receiver."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import requests

from backout_sandbox import forge as forge_module
from tests.stub_http import Reply, StubServer

pytestmark = pytest.mark.integration

REPO = "acme/widgets"
REASON = "spin() divides by zero"


@dataclass
class World:
    forge: forge_module.Forge
    demo: dict
    env: dict
    hook: StubServer
    database: str
    tmp: Path

    @property
    def bare(self) -> str:
        return self.demo["bare"]

    @property
    def checkout(self) -> str:
        return self.demo["checkout"]


@pytest.fixture
def world(tmp_path, database):
    forge = forge_module.start(port=0, state_path=tmp_path / "forge.json")
    demo = forge_module.demo_package(forge, tmp_path / "world")
    hook = StubServer(lambda request: Reply(200, {"ok": True}))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BACKOUT_", "GITHUB_", "HEROKU_", "SENTRY_"))}
    env.update(BACKOUT_GITHUB_API_URL=forge.url, BACKOUT_PYPI_URL=forge.url, GITHUB_TOKEN=demo["token"],
               DATABASE_URL=database, BACKOUT_NOTIFY_URL=f"{hook.url}/hook")
    yield World(forge, demo, env, hook, database, tmp_path)
    hook.close()
    forge.stop()


def cli(world: World, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "backout", "package-rollback", "--repo", REPO, "--bad", "1.2.3",
                           *args], env=env or world.env, capture_output=True, text=True, timeout=120)


def git(*args: str, cwd: str | None = None, check: bool = True) -> str:
    result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if check and result.returncode:
        raise AssertionError(result.stderr)
    return result.stdout.strip()


def bare(world: World, *args: str, check: bool = True) -> str:
    return git("--git-dir", world.bare, *args, check=check)


def snapshot(world: World) -> dict:
    """Everything a rollback could change: the forge's state, both repositories, the ledger."""
    state = json.loads((world.tmp / "forge.json").read_text())
    state.pop("rate")
    with psycopg.connect(world.database) as conn:
        exists = conn.execute("SELECT to_regclass('backout.requests')").fetchone()[0]
        requests_count = conn.execute("SELECT count(*) FROM backout.requests").fetchone()[0] if exists else 0
    return {"forge": state, "remote": bare(world, "for-each-ref"),
            "checkout": git("for-each-ref", cwd=world.checkout), "status": git("status", "--porcelain", cwd=world.checkout),
            "requests": requests_count, "webhooks": len(world.hook.requests)}


def ledger_rows(world: World, sql: str, *params) -> list[tuple]:
    with psycopg.connect(world.database) as conn:
        return conn.execute(sql, params).fetchall()


def test_the_whole_runbook_then_a_rerun_then_the_yank(world):
    good_commit = bare(world, "rev-parse", "v1.2.2^{commit}")
    bad_object = bare(world, "rev-parse", "v1.2.3")
    bad_commit = bare(world, "rev-parse", "v1.2.3^{commit}")

    run = cli(world, "--confirm", REPO, "--reason", REASON, "--checkout", world.checkout)
    assert run.returncode == 0, run.stderr

    # 2: the bad release and tag are gone, on GitHub and in the person's checkout.
    assert [r["tag_name"] for r in world.forge.releases(REPO)] == ["v1.2.0", "v1.2.1", "v1.2.2", "v1.2.4"]
    assert bare(world, "tag", "--list", "v1.2.3") == ""
    assert git("tag", "--list", "v1.2.3", cwd=world.checkout) == ""
    # 3: v1.2.4 is the good code with the version bumped, on branch rollback-1.2.4.
    new_commit = bare(world, "rev-parse", "v1.2.4^{commit}")
    assert bare(world, "rev-parse", f"{new_commit}^") == good_commit
    assert bare(world, "rev-parse", "refs/heads/rollback-1.2.4") == new_commit
    assert bare(world, "cat-file", "-t", "v1.2.4") == "tag"
    assert 'version = "1.2.4"' in bare(world, "show", "v1.2.4:pyproject.toml")
    assert bare(world, "diff", "--stat", "v1.2.2", "v1.2.4", "--", "src") == ""
    assert bare(world, "diff", "--name-only", "v1.2.2", "v1.2.4").split() == ["CHANGELOG.md", "pyproject.toml"]
    assert "## [1.2.4] - " in bare(world, "show", "v1.2.4:CHANGELOG.md")
    # 4: the yank steps, with PyPI's and TestPyPI's links.
    assert "https://pypi.org/manage/project/widgets/release/1.2.3/" in run.stdout
    assert "https://test.pypi.org/manage/project/widgets/release/1.2.3/" in run.stdout
    assert "Then run: backout package-rollback --repo acme/widgets --bad 1.2.3 --recheck" in run.stdout
    # 5: the changelog on main says what was rolled back and why; the release notes too.
    main_log = bare(world, "show", "main:CHANGELOG.md")
    assert "## [1.2.3] - 2024-04-15 [YANKED]" in main_log
    entry = main_log[main_log.index("## [1.2.4]"):main_log.index("## [1.2.3]")]
    assert "Rolled back 1.2.3" in entry and REASON in entry and "code of 1.2.2" in entry
    assert f"[1.2.3]: https://github.com/acme/widgets/tree/{bad_commit}" in main_log
    notes = requests.get(f"{world.forge.url}/repos/{REPO}/releases/tags/v1.2.4", timeout=10).json()["body"]
    assert "Rolled back 1.2.3" in notes and REASON in notes
    # 6: users are told, through an issue and the webhook.
    [issue] = world.forge.issues(REPO)
    assert issue["title"] == "1.2.3 was withdrawn; upgrade to 1.2.4" and "pip install --upgrade widgets" in issue["body"]
    [delivery] = world.hook.requests
    assert delivery.json()["event"] == "package_rollback.succeeded" and "1.2.4" in delivery.json()["text"]
    assert world.demo["token"] not in run.stdout + run.stderr + json.dumps(delivery.json())

    # The ledger keeps what was deleted, recorded before it went.
    rows = ledger_rows(world, "SELECT step, status, detail FROM backout.steps ORDER BY id")
    started = {step: detail for step, status, detail in rows if status == "started"}
    assert started["delete_release"]["release"]["body"] == "Release notes of 1.2.3."
    assert started["delete_tag"]["object"]["sha"] == bad_object and started["delete_tag"]["commit"] == bad_commit
    [(status, result)] = ledger_rows(world, "SELECT status, result FROM backout.requests")
    assert status == "succeeded" and result["yank"] == "pending"

    # A rerun does nothing twice: it only looks at PyPI again.
    before = snapshot(world)
    rerun = cli(world, "--confirm", REPO, "--checkout", world.checkout)
    assert rerun.returncode == 0, rerun.stderr
    after = snapshot(world)
    assert after["remote"] == before["remote"] and after["webhooks"] == before["webhooks"] == 1
    assert after["forge"]["repos"] == before["forge"]["repos"]
    steps_run = [s for s, _, _ in ledger_rows(world, "SELECT step, status, detail FROM backout.steps ORDER BY id")]
    assert steps_run[len(rows):] == ["pypi_yank"]

    # The maintainer yanks it; --recheck sees it and records when.
    world.forge.yank("widgets", "1.2.3", REASON)
    recheck = cli(world, "--recheck", "--json")
    assert recheck.returncode == 0, recheck.stderr
    doc = json.loads(recheck.stdout)
    assert doc["status"] == "succeeded" and doc["yank"]["state"] == "yanked" and doc["yank"]["steps"] == []
    [yank] = [s for s in doc["steps"] if s["step"] == "pypi_yank"]
    assert yank["status"] == "done"
    assert yank["detail"]["last_seen_unyanked_at"] <= yank["detail"]["first_seen_yanked_at"]
    assert yank["detail"]["rollback_published"] is True  # the release workflow uploaded 1.2.4
    assert {s["step"]: s["status"] for s in doc["steps"]} == {
        "delete_release": "done", "delete_tag": "done", "rollback_tag": "done", "pypi_yank": "done",
        "changelog": "done", "release_notes": "done", "notify_issue": "done", "notify_webhook": "done"}


def test_dry_run_changes_nothing(world):
    before = snapshot(world)
    text = cli(world, "--dry-run", "--checkout", world.checkout)
    assert text.returncode == 0, text.stderr
    assert "(dry run: nothing changed)" in text.stdout
    assert "delete the GitHub release of v1.2.3" in text.stdout and "version 1.2.2 -> 1.2.4 in pyproject.toml" in text.stdout
    as_json = cli(world, "--dry-run", "--json", "--reason", REASON)
    assert as_json.returncode == 0, as_json.stderr
    doc = json.loads(as_json.stdout)
    assert (doc["status"], doc["good"], doc["good_source"], doc["rollback_version"]) == (
        "planned", "1.2.2", "CHANGELOG.md", "1.2.4")
    assert doc["tags"] == {"bad": "v1.2.3", "good": "v1.2.2", "new": "v1.2.4"} and doc["request_id"] is None
    assert [s["status"] for s in doc["steps"]] == ["planned"] * 8
    assert doc["yank"]["state"] == "pending" and len(doc["yank"]["files"]) == 2
    assert snapshot(world) == before


def test_an_interrupted_run_continues_and_a_protected_main_gets_a_branch(world):
    hook = Path(world.bare) / "hooks" / "pre-receive"
    hook.write_text('#!/bin/sh\nwhile read old new ref; do\n  if grep -qx "$ref" "$(dirname "$0")/../protected" '
                    '2>/dev/null; then echo "protected: $ref" >&2; exit 1; fi\ndone\n')
    hook.chmod(0o755)
    protected = Path(world.bare) / "protected"
    protected.write_text("refs/tags/v1.2.4\n")
    main_before = bare(world, "rev-parse", "main")

    # Without --checkout, backout clones with the token; the tag push is refused half-way.
    first = cli(world, "--confirm", REPO)
    assert first.returncode == 1
    assert "origin refused the rollback branch and tag" in first.stderr and "protected: refs/tags/v1.2.4" in first.stderr
    assert bare(world, "tag", "--list", "v1.2.3") == "" and bare(world, "tag", "--list", "v1.2.4") == ""
    assert bare(world, "branch", "--list", "rollback-1.2.4") == ""  # atomic: neither ref landed
    assert ledger_rows(world, "SELECT status FROM backout.requests") == [("failed",)]

    protected.write_text("refs/heads/main\n")
    second = cli(world, "--confirm", REPO)
    assert second.returncode == 0, second.stderr
    assert bare(world, "rev-parse", "main") == main_before
    assert "## [1.2.4]" in bare(world, "show", "refs/heads/backout/changelog-1.2.4:CHANGELOG.md")
    assert "main refused the push; the commit is on branch backout/changelog-1.2.4: open a pull request" in second.stdout
    done = ledger_rows(world, "SELECT step, count(*) FROM backout.steps WHERE status = 'done' GROUP BY step")
    assert dict(done) == {"delete_release": 1, "delete_tag": 1, "rollback_tag": 1, "changelog": 1,
                          "release_notes": 1, "notify_issue": 1, "notify_webhook": 1}
    assert len(world.forge.issues(REPO)) == 1


def _token(world, **kwargs):
    world.forge.add_token("ghp_other", **kwargs)
    return {**world.env, "GITHUB_TOKEN": "ghp_other"}


def _dirty(world):
    Path(world.checkout, "CHANGELOG.md").write_text("## [9.9.9]\n\nwork in progress\n")
    return ["--checkout", world.checkout], world.env


def _unsorted(world):
    log = Path(world.checkout, "CHANGELOG.md")
    text = log.read_text()
    log.write_text(text.replace("## [1.2.2]", "## [1.2.X]").replace("## [1.2.1]", "## [1.2.2]")
                   .replace("## [1.2.X]", "## [1.2.1]"))
    git("commit", "-qam", "Shuffle the changelog", cwd=world.checkout)
    git("push", "-q", "origin", "main", cwd=world.checkout)
    return [], world.env


BAD_INPUTS = {
    "unknown repository": (lambda w: (["--repo", "acme/gadgets"], w.env),
                           "repository acme/gadgets was not found on GitHub"),
    "bad version that does not exist": (lambda w: (["--bad", "9.9.9"], w.env), "acme/widgets has no version 9.9.9"),
    "good newer than bad": (lambda w: (["--good", "1.2.4"], w.env), "--good 1.2.4 is not older than --bad 1.2.3"),
    "good without a tag": (lambda w: (["--good", "1.1.0"], w.env), "the good version 1.1.0 has no tag v1.1.0"),
    "rollback version taken": (lambda w: (["--bad", "1.2.2"], w.env), "the rollback version 1.2.3 .* is taken"),
    "missing token": (lambda w: ([], {k: v for k, v in w.env.items() if k != "GITHUB_TOKEN"}),
                      "GITHUB_TOKEN is not set; expected a GitHub token"),
    "wrong token": (lambda w: ([], {**w.env, "GITHUB_TOKEN": "ghp_revoked"}), "GitHub refused GITHUB_TOKEN"),
    "classic token without scope": (lambda w: ([], _token(w, login="acme", scopes=["read:org"])),
                                    "GITHUB_TOKEN has the scopes read:org but .* needs 'repo'"),
    "fine-grained token without contents:write": (
        lambda w: ([], _token(w, login="acme", permissions={"contents": "read", "issues": "write"})),
        "GITHUB_TOKEN may not write contents .* contents:write"),
    "a user who cannot push": (lambda w: ([], _token(w, login="mallory", scopes=["repo"])),
                               "cannot push to acme/widgets"),
    "dirty changelog": (_dirty, "CHANGELOG.md has uncommitted changes in .*; commit or stash them"),
    "unexpected changelog": (_unsorted, "CHANGELOG.md is not newest first"),
    "no confirmation": (lambda w: (["--confirm", "acme/other"], w.env), "needs --confirm acme/widgets"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_exits_2_and_changes_nothing(world, case):
    setup, message = BAD_INPUTS[case]
    args, env = setup(world)
    before = snapshot(world)
    confirm = [] if "--confirm" in args else ["--confirm", REPO]
    run = cli(world, *confirm, *args, env=env)
    assert run.returncode == 2, run.stdout + run.stderr
    assert run.stderr.count("backout: ") == 1
    assert re.search(message, run.stderr), run.stderr
    assert snapshot(world) == before
    assert "Traceback" not in run.stderr


def test_a_version_with_its_changelog_marked_yanked_is_skipped(world):
    log = Path(world.checkout, "CHANGELOG.md")
    log.write_text(log.read_text().replace("## [1.2.2] - 2024-03-15", "## [1.2.2] - 2024-03-15 [YANKED]"))
    git("commit", "-qam", "1.2.2 was yanked", cwd=world.checkout)
    git("push", "-q", "origin", "main", cwd=world.checkout)
    world.forge.yank("widgets", "1.2.1", "also bad")
    run = cli(world, "--dry-run", "--json")
    assert run.returncode == 0, run.stderr
    doc = json.loads(run.stdout)
    assert doc["good"] == "1.2.0"
    assert doc["plan"]["skipped"] == [{"version": "1.2.2", "why": "marked yanked or rolled back in CHANGELOG.md"},
                                      {"version": "1.2.1", "why": "yanked on PyPI"}]


def test_a_spent_rate_limit_stops_the_run_and_a_rerun_finishes_it(world):
    world.forge.set_rate_limit(1000)
    assert cli(world, "--dry-run").returncode == 0
    plan_calls = json.loads((world.tmp / "forge.json").read_text())["rate"]["acme"]["used"]
    # Enough for the plan and the release's deletion, not for the tag's.
    world.forge.set_rate_limit(plan_calls + 3)
    first = cli(world, "--confirm", REPO)
    assert first.returncode == 1
    assert "GitHub's API rate limit for this token is spent until" in first.stderr and "rerun then" in first.stderr
    assert [s for s, st in ledger_rows(world, "SELECT step, status FROM backout.steps") if st == "done"] == [
        "delete_release"]
    assert bare(world, "tag", "--list", "v1.2.3") == "v1.2.3"

    world.forge.set_rate_limit(5000)
    # Meanwhile the project's release workflow made a release of its own for v1.2.4.
    world.forge.add_release(REPO, "v1.2.4", name="1.2.4", body="Built by the release workflow.")
    second = cli(world, "--confirm", REPO)
    assert second.returncode == 0, second.stderr
    assert bare(world, "tag", "--list", "v1.2.3") == "" and bare(world, "tag", "--list", "v1.2.4") == "v1.2.4"
    [notes] = [r["body"] for r in world.forge.releases(REPO) if r["tag_name"] == "v1.2.4"]
    assert notes.startswith("## Rollback release") and notes.endswith("Built by the release workflow.")
    done = dict(ledger_rows(world, "SELECT step, count(*) FROM backout.steps WHERE status = 'done' GROUP BY step"))
    assert done["delete_release"] == 1 and done["delete_tag"] == 1


def _gizmo(world: World) -> str:
    """A second package with other habits: bare version tags, setup.cfg pointing at __version__,
    a setext-style CHANGES.md, nothing on PyPI."""
    root = world.tmp / "gizmo"
    remote, work = root / "remote.git", root / "work"
    git("init", "-q", "--bare", "--initial-branch=trunk", str(remote))
    git("init", "-q", "--initial-branch=trunk", str(work))
    git("remote", "add", "origin", str(remote), cwd=str(work))
    (work / "gizmo").mkdir()
    changes = ""
    for version in ("2.0.0", "2.0.1"):
        (work / "setup.cfg").write_text("[metadata]\nname = gizmo\nversion = attr: gizmo.__version__\n")
        (work / "gizmo" / "__init__.py").write_text(f'__version__ = "{version}"\n')
        heading = f"{version} (2024-01-0{version[-1]})"
        changes = f"{heading}\n{'-' * len(heading)}\n\n* changes of {version}\n\n" + changes
        (work / "CHANGES.md").write_text("Changes\n=======\n\n" + changes)
        git("add", "-A", cwd=str(work))
        git("-c", "user.name=Bob", "-c", "user.email=bob@example.com", "commit", "-qm", version, cwd=str(work))
        git("tag", version, cwd=str(work))
    git("push", "-q", "origin", "trunk", "--tags", cwd=str(work))
    world.forge.add_repo("acme/gizmo", git_dir=remote, default_branch="trunk")
    return str(remote)


def test_bare_tags_setup_cfg_and_a_setext_changelog(world):
    remote = _gizmo(world)
    base = [sys.executable, "-m", "backout", "package-rollback", "--repo", "acme/gizmo", "--bad", "2.0.1"]
    plan = subprocess.run([*base, "--dry-run", "--json"], env=world.env, capture_output=True, text=True, timeout=60)
    assert plan.returncode == 0, plan.stderr
    doc = json.loads(plan.stdout)
    assert doc["tags"] == {"bad": "2.0.1", "good": "2.0.0", "new": "2.0.2"} and doc["good_source"] == "CHANGES.md"
    assert doc["plan"]["version_files"] == [{"path": "gizmo/__init__.py", "kind": "python"}]
    assert doc["yank"]["state"] == "not_published"

    run = subprocess.run([*base, "--confirm", "acme/gizmo", "--reason", "it leaks"], env=world.env,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert git("--git-dir", remote, "tag", "--list") == "2.0.0\n2.0.2"
    assert git("--git-dir", remote, "show", "2.0.2:gizmo/__init__.py") == '__version__ = "2.0.2"'
    changes = git("--git-dir", remote, "show", "trunk:CHANGES.md").splitlines()
    at = changes.index(next(line for line in changes if line.startswith("2.0.2 (")))
    assert changes[at + 1] == "-" * len(changes[at]) and changes[at + 3].startswith("* Rolled back 2.0.1")
    assert "2.0.1 (2024-01-01) [YANKED]" in changes
    assert "pypi yank: skipped" in run.stderr
