"""The JSON the sandbox answers with, shaped as the official Platform API schema says.

Every property the schema lists for a resource is present, with `null` where Heroku would have
nothing to say (a sandbox has no spaces, teams or ACM). The sandbox's one knowing departure is
`web_url`: `http://127.0.0.1:<port>/`, the app's router on loopback, where Heroku would say
`https://<app>.herokuapp.com/`.
"""

from __future__ import annotations

import uuid
from typing import Any

OWNER = {"email": "sandbox@backout.invalid", "id": "5a4d1b0c-0000-4000-8000-000000000001"}
# The account's creation time: fixed, like the owner, so that every sandbox shows the same account.
OWNER_SINCE = "2026-01-01T00:00:00Z"
STACK = {"id": str(uuid.uuid5(uuid.NAMESPACE_URL, "stack:heroku-24")), "name": "heroku-24"}
REGION = {"id": str(uuid.uuid5(uuid.NAMESPACE_URL, "region:us")), "name": "us"}
GENERATION = {"id": str(uuid.uuid5(uuid.NAMESPACE_URL, "generation:cedar")), "name": "cedar"}
SERVICE = {"id": str(uuid.uuid5(uuid.NAMESPACE_URL, "addon-service:heroku-postgresql")), "name": "heroku-postgresql"}
DYNO_SIZES = ("Eco", "Basic", "Standard-1X", "Standard-2X", "Performance-M", "Performance-L")


def stable_id(kind: str, name: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{kind}:{name}"))


def account() -> dict[str, Any]:
    """The one account of the sandbox: the owner of every app, whose token the sandbox accepts."""
    return {
        "allow_tracking": False,
        "beta": False,
        "country_of_residence": None,
        "created_at": OWNER_SINCE,
        "default_organization": None,
        "default_team": None,
        "delinquent_at": None,
        "email": OWNER["email"],
        "federated": False,
        "id": OWNER["id"],
        "identity_provider": None,
        "last_login": None,
        "name": "backout sandbox",
        "sms_number": None,
        "suspended_at": None,
        "two_factor_authentication": False,
        "updated_at": OWNER_SINCE,
        "verified": True,
    }


def log_session(session_id: str, url: str, stamp: str) -> dict[str, Any]:
    return {"created_at": stamp, "id": session_id, "logplex_url": url, "updated_at": stamp}


def app_ref(app: dict[str, Any]) -> dict[str, str]:
    return {"id": app["id"], "name": app["name"]}


def app(record: dict[str, Any], current: dict[str, Any] | None, slug: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "acm": False,
        "archived_at": None,
        "buildpack_provided_description": slug.get("buildpack_provided_description") if slug else None,
        "build_stack": STACK,
        "created_at": record["created_at"],
        "generation": GENERATION,
        "git_url": f"https://git.heroku.com/{record['name']}.git",
        "id": record["id"],
        "internal_routing": None,
        "maintenance": record.get("maintenance", False),
        "name": record["name"],
        "organization": None,
        "owner": OWNER,
        "region": REGION,
        "released_at": current["created_at"] if current else None,
        "repo_size": None,
        "slug_size": slug.get("size") if slug else None,
        "space": None,
        "stack": STACK,
        "team": None,
        "updated_at": record["updated_at"],
        "web_url": record["web_url"],
    }


def slug(record: dict[str, Any], blob_url: str, method: str) -> dict[str, Any]:
    return {
        "blob": {"method": method, "url": blob_url},
        "buildpack_provided_description": record.get("buildpack_provided_description"),
        "checksum": record.get("checksum"),
        "commit": record.get("commit"),
        "commit_description": record.get("commit_description"),
        "created_at": record["created_at"],
        "deleted_at": None,
        "id": record["id"],
        "process_types": record["process_types"],
        "size": record.get("size"),
        "stack": STACK,
        "updated_at": record["updated_at"],
    }


def release(record: dict[str, Any], app_record: dict[str, Any], current: bool, output_url: str | None) -> dict[str, Any]:
    slug_id = record.get("slug_id")
    return {
        "addon_plan_names": record.get("addon_plan_names", []),
        "app": app_ref(app_record),
        "artifacts": [{"type": "slug", "id": slug_id}] if slug_id else [],
        "created_at": record["created_at"],
        "current": current,
        "description": record["description"],
        "eligible_for_rollback": record["status"] == "succeeded" and slug_id is not None,
        "id": record["id"],
        "output_stream_url": output_url,
        "slug": {"id": slug_id} if slug_id else None,
        "status": record["status"],
        "updated_at": record["updated_at"],
        "user": OWNER,
        "version": record["version"],
    }


def formation(entry: dict[str, Any], type_: str, command: str, app_record: dict[str, Any]) -> dict[str, Any]:
    return {
        "app": app_ref(app_record),
        "command": command,
        "created_at": entry["created_at"],
        "dyno_size": {"id": stable_id("dyno-size", entry["size"]), "name": entry["size"]},
        "id": entry["id"],
        "quantity": entry["quantity"],
        "size": entry["size"],
        "type": type_,
        "updated_at": entry["updated_at"],
    }


def dyno(info: dict[str, Any], app_record: dict[str, Any]) -> dict[str, Any]:
    return {
        "app": app_ref(app_record),
        "attach_url": None,
        "command": info["command"],
        "created_at": info["created_at"],
        "id": info["id"],
        "name": info["name"],
        "release": {"id": info["release_id"], "version": info["release_version"]},
        "size": info["size"],
        "state": info["state"],
        "type": info["type"],
        "updated_at": info["updated_at"],
    }


def plan(name: str) -> dict[str, str]:
    return {"id": stable_id("plan", name), "name": name}


# What `Accept-Expansion: plan` adds to an add-on's plan: its price (the sandbox's cost nothing).
PLAN_PRICE = {"cents": 0, "contract": False, "unit": "month"}


def addon(record: dict[str, Any], app_record: dict[str, Any], config_vars: list[str], web_url: str | None) -> dict[str, Any]:
    return {
        "actions": [],
        "addon_service": SERVICE,
        "app": app_ref(app_record),
        "billed_price": {"cents": 0, "contract": False, "unit": "month"},
        "billing_entity": {"id": app_record["id"], "name": app_record["name"], "type": "app"},
        "config_vars": config_vars,
        "created_at": record["created_at"],
        "id": record["id"],
        "name": record["name"],
        "plan": plan(record["plan"]),
        "provider_id": record["database"]["name"] if record.get("database") else record["id"],
        "provision_message": record.get("provision_message", ""),
        "state": record["state"],
        "updated_at": record["updated_at"],
        "web_url": web_url,
    }


def attachment(record: dict[str, Any], addon_record: dict[str, Any], addon_app: dict[str, Any],
               app_record: dict[str, Any], web_url: str | None) -> dict[str, Any]:
    return {
        "addon": {"id": addon_record["id"], "name": addon_record["name"], "app": app_ref(addon_app)},
        "app": app_ref(app_record),
        "created_at": record["created_at"],
        "id": record["id"],
        "log_input_url": None,
        "name": record["name"],
        "namespace": None,
        "updated_at": record["updated_at"],
        "web_url": web_url,
    }


def webhook(record: dict[str, Any], app_record: dict[str, Any]) -> dict[str, Any]:
    return {
        "app": app_ref(app_record),
        "created_at": record["created_at"],
        "id": record["id"],
        "include": record["include"],
        "level": record["level"],
        "updated_at": record["updated_at"],
        "url": record["url"],
    }
