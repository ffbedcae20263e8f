import re
import subprocess
import sys

import pytest

from backout import __version__
from backout.cli import COMMANDS


def run(*args, env=None):
    return subprocess.run([sys.executable, "-m", "backout", *args], capture_output=True, text=True, env=env)


def test_version():
    out = run("--version")
    assert out.returncode == 0
    assert out.stdout.strip() == f"backout {__version__}"


def test_help_lists_every_subcommand():
    out = run("--help")
    assert out.returncode == 0
    for name, _, _ in COMMANDS:
        assert name in out.stdout
    # Most names also stand in the descriptions: the parser's own choices are the subcommands.
    refused = run("no-such-command")
    assert refused.returncode == 2
    choices = re.search(r"choose from (.*?)\)", refused.stderr)
    assert choices, refused.stderr
    assert re.findall(r"'([^']+)'", choices[1]) == [name for name, _, _ in COMMANDS]


@pytest.mark.parametrize("name", [c[0] for c in COMMANDS])
def test_every_subcommand_has_help(name):
    out = run(name, "--help")
    assert out.returncode == 0, out.stderr
    assert f"usage: backout {name}" in out.stdout


def test_bad_setting_exits_2_with_the_variable_named():
    import os

    env = dict(os.environ, DATABASE_URL="mysql://root:hunter2secret@db/app")
    out = run("checkpoints", "--app", "demo", env=env)
    assert out.returncode == 2
    assert "DATABASE_URL is not a PostgreSQL URL; expected postgres://" in out.stderr
    assert "hunter2secret" not in out.stderr + out.stdout
