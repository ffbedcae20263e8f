"""The forge sandbox: the part of GitHub's REST API and PyPI's JSON API that package rollbacks use.

A real HTTP server on 127.0.0.1 (one port serves both APIs) with its state in a JSON file, for
tests and for rehearsing `backout package-rollback` before doing it for real. Its parts:

- `server`: `start()` and `Forge`, the running forge and the methods that set up its world
- `github`: repositories, git refs and tags, releases, issues, contents (each repository's git data
  is a real bare repository, read and written with `git`)
- `auth`: tokens (classic scopes, fine-grained permissions), access checks, the rate limit
- `pypi`: PyPI's JSON API, yanking, and the stand-in release workflow that uploads pushed tags
- `git`, `errors`, `demo` (a package whose last release is bad)

GitHub routes: `GET /repos/{o}/{r}`, `GET .../git/ref/{ref}`, `GET .../git/matching-refs/{prefix}`,
`POST .../git/refs`, `DELETE .../git/refs/{ref}`, `GET .../git/tags/{sha}`, `GET|POST .../releases`,
`GET .../releases/tags/{tag}`, `GET|PATCH|DELETE .../releases/{id}`, `GET|POST .../issues`,
`GET .../contents/{path}?ref=`, paged with `Link` headers. PyPI routes: `GET /pypi/{project}/json`,
`GET /pypi/{project}/{version}/json`, and `POST /_sandbox/pypi/{project}/{version}/yank`.

    forge = start(port=0, state_path=tmp / "forge.json")
    forge.add_repo("acme/widgets", git_dir=bare, owner="alice")
    forge.add_token("ghp_x", login="alice", scopes=["repo"])
    ... BACKOUT_GITHUB_API_URL=forge.url BACKOUT_PYPI_URL=forge.url ...
    forge.stop()

Run it for a rehearsal with `python -m backout_sandbox.forge --port 5011 --demo DIR`.
"""

from backout_sandbox.forge.demo import DEMO_REPO, DEMO_TOKEN, demo_package
from backout_sandbox.forge.server import Forge, start

__all__ = ["DEMO_REPO", "DEMO_TOKEN", "Forge", "demo_package", "start"]
