"""The Procfile and app.json that put backout on Heroku."""

import json
import shlex
from pathlib import Path

import jsonschema

from backout.cli import COMMANDS, build_parser
from backout.settings import setting_names

ROOT = Path(__file__).resolve().parent.parent


def procfile() -> dict[str, str]:
    entries = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, command = line.partition(":")
            entries[name.strip()] = command.strip()
    return entries


def test_procfile_has_the_release_hook_the_worker_and_the_web_page():
    entries = procfile()
    assert set(entries) == {"release", "worker", "web"}
    assert shlex.split(entries["release"])[:2] == ["backout", "release"]
    assert shlex.split(entries["worker"]) == ["backout", "worker"]
    assert shlex.split(entries["web"]) == ["backout", "web"]


def test_procfile_commands_parse_as_backout_subcommands():
    names = {name for name, _, _ in COMMANDS}
    for command in procfile().values():
        argv = shlex.split(command)
        assert argv[0] == "backout"
        assert argv[1] in names
        build_parser().parse_args(argv[1:])  # exits on an unknown option


def test_app_json_is_valid_against_the_app_json_schema():
    schema = json.loads((ROOT / "tests/schemas/app-json.schema.json").read_text())
    document = json.loads((ROOT / "app.json").read_text())
    jsonschema.Draft7Validator(schema, format_checker=jsonschema.FormatChecker()).validate(document)


def test_app_json_names_only_settings_backout_knows():
    document = json.loads((ROOT / "app.json").read_text())
    unknown = set(document["env"]) - set(setting_names())
    assert not unknown, f"app.json names variables the settings do not read: {sorted(unknown)}"


def test_app_json_provisions_postgres_and_redis_and_a_worker():
    document = json.loads((ROOT / "app.json").read_text())
    plans = [a["plan"] if isinstance(a, dict) else a for a in document["addons"]]
    assert any(p.startswith("heroku-postgresql") for p in plans)
    assert any(p.startswith("heroku-redis") for p in plans)
    assert document["formation"]["worker"]["quantity"] >= 1
    assert document["formation"]["web"]["quantity"] == 1
    assert document["env"]["BACKOUT_WEB_PASSWORD"]["generator"] == "secret"
    assert {"url": "heroku/python"} in document["buildpacks"]


def test_schema_rejects_a_misspelled_key():
    schema = json.loads((ROOT / "tests/schemas/app-json.schema.json").read_text())
    document = json.loads((ROOT / "app.json").read_text())
    document["addon"] = document.pop("addons")
    errors = list(jsonschema.Draft7Validator(schema).iter_errors(document))
    assert errors
