"""The forge sandbox behaves like GitHub's REST API and PyPI's JSON API where backout relies on it."""

from __future__ import annotations

import base64
import json
import subprocess

import pytest
import requests

from backout_sandbox import forge as forge_module

pytestmark = pytest.mark.integration

REPO = "acme/widgets"


@pytest.fixture
def world(tmp_path):
    forge = forge_module.start(port=0, state_path=tmp_path / "forge.json")
    demo = forge_module.demo_package(forge, tmp_path / "world")
    yield forge, demo
    forge.stop()


def api(forge, method, path, token=None, scheme="Bearer", **kwargs):
    headers = {"Authorization": f"{scheme} {token}"} if token else {}
    return requests.request(method, forge.url + path, headers=headers, timeout=10, **kwargs)


def git(*args, cwd=None):
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


def test_repository_refs_tags_and_contents(world):
    forge, demo = world
    token = demo["token"]
    repo = api(forge, "GET", f"/repos/{REPO}", token)
    assert repo.status_code == 200
    body = repo.json()
    assert body["full_name"] == REPO and body["default_branch"] == "main" and body["permissions"]["push"]
    assert body["clone_url"] == f"file://{demo['bare']}"
    assert repo.headers["X-OAuth-Scopes"] == "repo, workflow"
    assert int(repo.headers["X-RateLimit-Remaining"]) == int(repo.headers["X-RateLimit-Limit"]) - 1
    assert repo.headers["X-RateLimit-Resource"] == "core"

    tags = api(forge, "GET", f"/repos/{REPO}/git/matching-refs/tags/v1.2", token).json()
    assert [t["ref"] for t in tags] == [f"refs/tags/v1.2.{n}" for n in range(4)]
    ref = api(forge, "GET", f"/repos/{REPO}/git/ref/tags/v1.2.2", token).json()
    assert ref["object"]["type"] == "tag"  # annotated, as `git tag -a` makes it
    assert ref["object"]["sha"] == git("--git-dir", demo["bare"], "rev-parse", "refs/tags/v1.2.2")
    peeled = api(forge, "GET", f"/repos/{REPO}/git/tags/{ref['object']['sha']}", token).json()
    assert peeled["object"] == {**peeled["object"], "type": "commit",
                                "sha": git("--git-dir", demo["bare"], "rev-parse", "v1.2.2^{commit}")}

    file = api(forge, "GET", f"/repos/{REPO}/contents/pyproject.toml", token, params={"ref": "v1.2.2"}).json()
    assert file["type"] == "file" and file["encoding"] == "base64"
    assert 'version = "1.2.2"' in base64.b64decode(file["content"]).decode()
    listing = api(forge, "GET", f"/repos/{REPO}/contents/src", token).json()
    assert [(e["name"], e["type"]) for e in listing] == [("widgets", "dir")]
    missing = api(forge, "GET", f"/repos/{REPO}/contents/nope.txt", token)
    assert missing.status_code == 404
    assert set(missing.json()) == {"message", "documentation_url", "status"}
    bad_ref = api(forge, "GET", f"/repos/{REPO}/contents/pyproject.toml", token, params={"ref": "v9"})
    assert (bad_ref.status_code, bad_ref.json()["message"]) == (404, "No commit found for the ref v9")


def test_authentication_and_classic_scopes(world, tmp_path):
    forge, demo = world
    assert api(forge, "GET", f"/repos/{REPO}").status_code == 200  # public: anyone may read
    assert api(forge, "DELETE", f"/repos/{REPO}/git/refs/tags/v1.2.3").status_code == 401
    bad = api(forge, "GET", f"/repos/{REPO}", "ghp_wrong")
    assert (bad.status_code, bad.json()["message"]) == (401, "Bad credentials")
    assert api(forge, "GET", f"/repos/{REPO}", demo["token"], scheme="token").status_code == 200

    forge.add_token("ghp_none", login="acme", scopes=[])
    forge.add_token("ghp_public", login="acme", scopes=["public_repo"])
    refused = api(forge, "DELETE", f"/repos/{REPO}/git/refs/tags/v1.2.3", "ghp_none")
    assert refused.status_code == 404  # GitHub hides what a token's scopes do not cover
    assert refused.headers["X-Accepted-OAuth-Scopes"] == "repo" and refused.headers["X-OAuth-Scopes"] == ""
    assert api(forge, "POST", f"/repos/{REPO}/git/refs", "ghp_public", json={}).status_code == 422

    forge.add_repo("acme/secret", git_dir=demo["bare"], private=True)
    assert api(forge, "GET", "/repos/acme/secret").status_code == 404
    assert api(forge, "GET", "/repos/acme/secret", "ghp_public").status_code == 404
    assert api(forge, "GET", "/repos/acme/secret", demo["token"]).status_code == 200
    forge.add_token("ghp_mallory", login="mallory", scopes=["repo"])
    assert api(forge, "GET", f"/repos/{REPO}", "ghp_mallory").json()["permissions"]["push"] is False
    assert api(forge, "DELETE", f"/repos/{REPO}/git/refs/tags/v1.2.3", "ghp_mallory").status_code == 404


def test_fine_grained_tokens_get_403_before_the_body_is_looked_at(world):
    forge, demo = world
    forge.add_token("github_pat_ro", login="acme", permissions={"contents": "read", "issues": "write"},
                    repositories=[REPO])
    forge.add_token("github_pat_rw", login="acme", permissions={"contents": "write"}, repositories=[REPO])
    forge.add_token("github_pat_other", login="acme", permissions={"contents": "write"}, repositories=["acme/x"])
    read = api(forge, "GET", f"/repos/{REPO}", "github_pat_ro")
    assert read.status_code == 200 and "X-OAuth-Scopes" not in read.headers
    denied = api(forge, "POST", f"/repos/{REPO}/git/refs", "github_pat_ro", json={})
    assert denied.status_code == 403
    assert denied.json()["message"] == "Resource not accessible by personal access token"
    assert denied.headers["X-Accepted-GitHub-Permissions"] == "contents=write"
    assert api(forge, "POST", f"/repos/{REPO}/git/refs", "github_pat_rw", json={}).status_code == 422
    assert api(forge, "POST", f"/repos/{REPO}/issues", "github_pat_rw", json={}).status_code == 403
    assert api(forge, "POST", f"/repos/{REPO}/issues", "github_pat_ro", json={}).status_code == 422
    assert api(forge, "DELETE", f"/repos/{REPO}/git/refs/tags/v1.2.3", "github_pat_other").status_code == 404
    assert git("--git-dir", demo["bare"], "tag", "--list", "v1.2.3") == "v1.2.3"


def test_refs_follow_the_bare_repository_both_ways(world):
    forge, demo = world
    token = demo["token"]
    head = git("--git-dir", demo["bare"], "rev-parse", "main")
    made = api(forge, "POST", f"/repos/{REPO}/git/refs", token, json={"ref": "refs/tags/t1", "sha": head})
    assert made.status_code == 201 and made.json()["object"] == {**made.json()["object"], "sha": head, "type": "commit"}
    assert git("--git-dir", demo["bare"], "rev-parse", "t1") == head
    again = api(forge, "POST", f"/repos/{REPO}/git/refs", token, json={"ref": "refs/tags/t1", "sha": head})
    assert (again.status_code, again.json()["message"]) == (422, "Reference already exists")
    ghost = api(forge, "POST", f"/repos/{REPO}/git/refs", token, json={"ref": "refs/tags/t2", "sha": "1" * 40})
    assert (ghost.status_code, ghost.json()["message"]) == (422, "Object does not exist")

    assert api(forge, "DELETE", f"/repos/{REPO}/git/refs/tags/v1.2.3", token).status_code == 204
    gone = api(forge, "DELETE", f"/repos/{REPO}/git/refs/tags/v1.2.3", token)
    assert (gone.status_code, gone.json()["message"]) == (422, "Reference does not exist")
    assert git("--git-dir", demo["bare"], "tag", "--list", "v1.2.3") == ""
    # GitHub turns the release of a deleted tag into a draft: gone from by-tag, kept for writers.
    assert api(forge, "GET", f"/repos/{REPO}/releases/tags/v1.2.3", token).status_code == 404
    drafts = [r for r in api(forge, "GET", f"/repos/{REPO}/releases", token).json() if r["draft"]]
    assert [r["tag_name"] for r in drafts] == ["v1.2.3"]
    assert all(not r["draft"] for r in api(forge, "GET", f"/repos/{REPO}/releases").json())

    checkout = demo["checkout"]
    git("tag", "v9.0.0", cwd=checkout)
    git("push", "--quiet", "origin", "v9.0.0", cwd=checkout)
    assert api(forge, "GET", f"/repos/{REPO}/git/ref/tags/v9.0.0", token).json()["object"]["sha"] == head


def test_releases_with_link_pagination(world):
    forge, demo = world
    token = demo["token"]
    first = api(forge, "GET", f"/repos/{REPO}/releases", token, params={"per_page": 3})
    assert [r["tag_name"] for r in first.json()] == ["v1.2.3", "v1.2.2", "v1.2.1"]
    assert first.links["next"]["url"].endswith("page=2") and "last" in first.links
    second = requests.get(first.links["next"]["url"], headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert [r["tag_name"] for r in second.json()] == ["v1.2.0"]
    assert "next" not in second.links and "prev" in second.links

    made = api(forge, "POST", f"/repos/{REPO}/releases", token,
               json={"tag_name": "v2.0.0", "target_commitish": "v1.2.1", "name": "2.0.0", "body": "notes"})
    assert made.status_code == 201
    # Publishing a release of a missing tag creates the tag at target_commitish.
    assert git("--git-dir", demo["bare"], "rev-parse", "v2.0.0") == git("--git-dir", demo["bare"], "rev-parse",
                                                                         "v1.2.1^{commit}")
    dup = api(forge, "POST", f"/repos/{REPO}/releases", token, json={"tag_name": "v2.0.0"})
    assert dup.status_code == 422 and dup.json()["errors"][0]["code"] == "already_exists"
    release_id = made.json()["id"]
    edited = api(forge, "PATCH", f"/repos/{REPO}/releases/{release_id}", token, json={"body": "new notes"})
    assert edited.json()["body"] == "new notes"
    assert api(forge, "GET", f"/repos/{REPO}/releases/tags/v2.0.0", token).json()["id"] == release_id
    assert api(forge, "DELETE", f"/repos/{REPO}/releases/{release_id}", token).status_code == 204
    assert api(forge, "DELETE", f"/repos/{REPO}/releases/{release_id}", token).status_code == 404


def test_issues(world, tmp_path):
    forge, demo = world
    token = demo["token"]
    one = api(forge, "POST", f"/repos/{REPO}/issues", token, json={"title": "first", "body": "x"}).json()
    two = api(forge, "POST", f"/repos/{REPO}/issues", token, json={"title": "second"}).json()
    assert (one["number"], two["number"]) == (1, 2) and one["html_url"].endswith("/issues/1")
    listed = api(forge, "GET", f"/repos/{REPO}/issues", token, params={"state": "all"}).json()
    assert [i["title"] for i in listed] == ["second", "first"]
    untitled = api(forge, "POST", f"/repos/{REPO}/issues", token, json={"body": "no title"})
    assert untitled.status_code == 422
    forge.add_repo("acme/quiet", git_dir=demo["bare"], has_issues=False)
    disabled = api(forge, "POST", "/repos/acme/quiet/issues", token, json={"title": "t"})
    assert (disabled.status_code, disabled.json()["message"]) == (410, "Issues are disabled for this repo")


def test_rate_limit_runs_out_with_a_403(world):
    forge, demo = world
    forge.set_rate_limit(2)
    answers = [api(forge, "GET", f"/repos/{REPO}", demo["token"]) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 403]
    assert [a.headers["X-RateLimit-Remaining"] for a in answers] == ["1", "0", "0"]
    assert answers[2].json()["message"].startswith("API rate limit exceeded for user ID")
    assert int(answers[2].headers["X-RateLimit-Reset"]) > 0


def test_pypi_json_api_yank_and_release_workflow(world):
    forge, demo = world
    project = requests.get(f"{forge.url}/pypi/widgets/json", timeout=10).json()
    assert project["info"]["version"] == "1.2.3"
    assert sorted(project["releases"]) == ["1.2.0", "1.2.1", "1.2.2", "1.2.3"]
    release = requests.get(f"{forge.url}/pypi/widgets/1.2.3/json", timeout=10).json()
    assert "releases" not in release
    assert [f["filename"] for f in release["urls"]] == ["widgets-1.2.3.tar.gz", "widgets-1.2.3-py3-none-any.whl"]
    assert release["info"]["yanked"] is False and all(f["yanked"] is False for f in release["urls"])
    renamed = requests.get(f"{forge.url}/pypi/Widgets/1.2.3/json", timeout=10, allow_redirects=False)
    assert renamed.status_code == 301 and renamed.headers["Location"].endswith("/pypi/widgets/1.2.3/json")
    unknown = requests.get(f"{forge.url}/pypi/widgets/7.0/json", timeout=10)
    assert (unknown.status_code, unknown.json()) == (404, {"message": "Not Found"})

    yank = requests.post(f"{forge.url}/_sandbox/pypi/widgets/1.2.3/yank", json={"reason": "broken"}, timeout=10)
    assert yank.status_code == 200
    release = requests.get(f"{forge.url}/pypi/widgets/1.2.3/json", timeout=10).json()
    assert release["info"]["yanked"] is True and release["info"]["yanked_reason"] == "broken"
    assert all(f["yanked"] and f["yanked_reason"] == "broken" for f in release["urls"])
    assert requests.get(f"{forge.url}/pypi/widgets/json", timeout=10).json()["info"]["version"] == "1.2.2"

    forge.add_pypi_release("Other_Project", "0.1", files=["other_project-0.1.tar.gz"], yanked=True)
    other = requests.get(f"{forge.url}/pypi/other-project/0.1/json", timeout=10, allow_redirects=False)
    assert other.status_code == 301 and other.headers["Location"].endswith("/pypi/Other_Project/0.1/json")
    other = requests.get(f"{forge.url}/pypi/other-project/0.1/json", timeout=10).json()
    assert [f["filename"] for f in other["urls"]] == ["other_project-0.1.tar.gz"] and other["info"]["yanked"]

    # A pushed version tag is "uploaded" by the stand-in release workflow.
    git("tag", "-a", "v1.3.0", "-m", "1.3.0", cwd=demo["checkout"])
    git("push", "--quiet", "origin", "v1.3.0", cwd=demo["checkout"])
    assert requests.get(f"{forge.url}/pypi/widgets/1.3.0/json", timeout=10).status_code == 200


def test_state_survives_a_restart(world, tmp_path):
    forge, demo = world
    api(forge, "POST", f"/repos/{REPO}/issues", demo["token"], json={"title": "kept"})
    forge.stop()
    with forge_module.start(port=0, state_path=tmp_path / "forge.json") as again:
        assert [i["title"] for i in again.issues(REPO)] == ["kept"]
        assert json.loads((tmp_path / "forge.json").read_text())["repos"]["acme/widgets"]["full_name"] == REPO
        assert api(again, "GET", f"/repos/{REPO}/releases/tags/v1.2.3", demo["token"]).status_code == 200
