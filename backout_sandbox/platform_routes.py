"""The Platform API routes the sandbox serves, each naming the official schema link it implements."""

from __future__ import annotations

from typing import Any, Callable

from backout_sandbox import resources
from backout_sandbox.addons import AddOns
from backout_sandbox.core.messages import Request, Response
from backout_sandbox.core.router import Router
from backout_sandbox.platform import Platform
from backout_sandbox.ratelimit import RateLimiter
from backout_sandbox.routing import header_words, invalid, not_found, paginate

APP = "{(#/definitions/app/definitions/identity)}"


def _ref(resource: str, name: str = "identity") -> str:
    return "{(#/definitions/" + resource + "/definitions/" + name + ")}"


def register(router: Router, platform: Platform, addons: AddOns, limiter: RateLimiter) -> None:
    store = platform.store

    add = router.route

    def read(app: str, answer: Callable[[dict[str, Any], dict[str, Any]], Any]) -> Any:
        """What `answer(data, the app's record)` reads of the store, under the store's lock."""
        with store.lock:
            return answer(store.data, platform.find_app(store.data, app))

    # --- account ---------------------------------------------------------------------------------

    @add("GET", "/account/rate-limits", "/account/rate-limits")
    def rate_limits(req: Request) -> Response:
        return Response(200, {"remaining": limiter.remaining(req.token or "")})

    @add("GET", "/account", "/account")
    def account(req: Request) -> Response:
        return Response(200, resources.account())

    def the_user(ident: str) -> None:
        """The sandbox has one user, the owner of every app: `~`, its email or its id."""
        if ident not in ("~", resources.OWNER["email"], resources.OWNER["id"]):
            raise not_found("user")

    # --- apps ------------------------------------------------------------------------------------

    @add("POST", "/apps", "/apps")
    def create_app(req: Request) -> Response:
        return Response(201, platform.create_app(req.json_object()))

    @add("GET", "/apps", "/apps")
    def list_apps(req: Request) -> Response:
        with store.lock:
            data = store.data
            apps = [platform.render_app(data, a) for a in data["apps"].values()]
        return paginate(apps, req.headers.get("Range"), ("id", "name", "updated_at"))

    @add("GET", "/users/{user}/apps", f"/users/{_ref('account')}/apps")
    def user_apps(req: Request, user: str) -> Response:
        the_user(user)
        return list_apps(req)

    @add("GET", "/apps/{app}", f"/apps/{APP}")
    def app_info(req: Request, app: str) -> Response:
        return Response(200, read(app, platform.render_app))

    @add("DELETE", "/apps/{app}", f"/apps/{APP}")
    def delete_app(req: Request, app: str) -> Response:
        return Response(200, addons.destroy_app(app))

    # --- slugs -----------------------------------------------------------------------------------

    @add("POST", "/apps/{app}/slugs", f"/apps/{APP}/slugs")
    def create_slug(req: Request, app: str) -> Response:
        return Response(201, platform.create_slug(app, req.json_object()))

    @add("GET", "/apps/{app}/slugs/{slug}", f"/apps/{APP}/slugs/{_ref('slug')}")
    def slug_info(req: Request, app: str, slug: str) -> Response:
        return Response(200, platform.slug_info(app, slug))

    # --- releases --------------------------------------------------------------------------------

    @add("GET", "/apps/{app}/releases", f"/apps/{APP}/releases")
    def list_releases(req: Request, app: str) -> Response:
        releases = read(app, lambda data, record: [platform.render_release(data, record, r)
                                                   for r in platform.releases_of(data, record["id"])])
        return paginate(releases, req.headers.get("Range"), ("version", "id"))

    @add("POST", "/apps/{app}/releases", f"/apps/{APP}/releases")
    def create_release(req: Request, app: str) -> Response:
        return Response(201, platform.create_release(app, req.json_object()))

    @add("GET", "/apps/{app}/releases/{release}", f"/apps/{APP}/releases/{_ref('release')}")
    def release_info(req: Request, app: str, release: str) -> Response:
        return Response(200, read(app, lambda data, record: platform.render_release(
            data, record, platform.find_release(data, record["id"], release))))

    # --- config vars -----------------------------------------------------------------------------

    @add("GET", "/apps/{app}/config-vars", f"/apps/{APP}/config-vars")
    def config_vars(req: Request, app: str) -> Response:
        return Response(200, read(app, lambda data, record: platform.config(data, record["id"])))

    @add("PATCH", "/apps/{app}/config-vars", f"/apps/{APP}/config-vars")
    def update_config_vars(req: Request, app: str) -> Response:
        return Response(200, platform.update_config(app, req.json()))

    @add("GET", "/apps/{app}/releases/{release}/config-vars", f"/apps/{APP}/releases/{_ref('release')}/config-vars")
    def release_config_vars(req: Request, app: str, release: str) -> Response:
        return Response(200, read(app, lambda data, record: dict(
            platform.find_release(data, record["id"], release)["config"])))

    # --- formation -------------------------------------------------------------------------------

    @add("GET", "/apps/{app}/formation", f"/apps/{APP}/formation")
    def formation(req: Request, app: str) -> Response:
        return Response(200, read(app, platform.formation))

    @add("PATCH", "/apps/{app}/formation", f"/apps/{APP}/formation")
    def batch_update_formation(req: Request, app: str) -> Response:
        return Response(200, platform.update_formation(app, req.json_object().get("updates")))

    @add("GET", "/apps/{app}/formation/{formation}", f"/apps/{APP}/formation/{_ref('formation')}")
    def formation_info(req: Request, app: str, formation: str) -> Response:
        def one(data: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
            type_ = platform.find_formation(data, record, formation)
            return next(f for f in platform.formation(data, record) if f["type"] == type_)

        return Response(200, read(app, one))

    @add("PATCH", "/apps/{app}/formation/{formation}", f"/apps/{APP}/formation/{_ref('formation')}")
    def update_formation(req: Request, app: str, formation: str) -> Response:
        body = req.json_object()
        if "type" in body:
            raise invalid("The process type is in the path; leave type out of the body.")
        return Response(200, platform.update_formation(app, [{**body, "type": formation}])[0])

    # --- dynos -----------------------------------------------------------------------------------

    @add("GET", "/apps/{app}/dynos", f"/apps/{APP}/dynos")
    def dynos(req: Request, app: str) -> Response:
        return Response(200, platform.list_dynos(app))

    @add("GET", "/apps/{app}/dynos/{dyno}", f"/apps/{APP}/dynos/{_ref('dyno')}")
    def dyno_info(req: Request, app: str, dyno: str) -> Response:
        return Response(200, platform.dyno_info(app, dyno))

    @add("DELETE", "/apps/{app}/dynos", f"/apps/{APP}/dynos")
    def restart_all(req: Request, app: str) -> Response:
        platform.restart(app)
        return Response(202, {})

    @add("DELETE", "/apps/{app}/dynos/{dyno}", f"/apps/{APP}/dynos/{_ref('dyno')}")
    def restart_dyno(req: Request, app: str, dyno: str) -> Response:
        platform.restart(app, dyno=dyno)
        return Response(202, {})

    @add("DELETE", "/apps/{app}/formations/{type}", f"/apps/{APP}/formations/{_ref('dyno', 'formation_type')}")
    def restart_formation(req: Request, app: str, type: str) -> Response:
        platform.restart(app, type_=type)
        return Response(202, {})

    # --- log sessions ----------------------------------------------------------------------------

    @add("POST", "/apps/{app}/log-sessions", f"/apps/{APP}/log-sessions")
    def create_log_session(req: Request, app: str) -> Response:
        name = read(app, lambda data, record: record["name"])
        return Response(201, platform.log_sessions.create(name, req.json_object()))

    # --- add-ons ---------------------------------------------------------------------------------

    def expanded(req: Request, addon: dict[str, Any]) -> dict[str, Any]:
        """`Accept-Expansion: plan` (the Heroku CLI's) adds the plan's price."""
        if "plan" in header_words(req, "Accept-Expansion"):
            addon["plan"] = {**addon["plan"], "price": dict(resources.PLAN_PRICE)}
        return addon

    @add("POST", "/apps/{app}/addons", f"/apps/{APP}/addons")
    def create_addon(req: Request, app: str) -> Response:
        return Response(201, expanded(req, addons.create(app, req.json_object())))

    @add("GET", "/apps/{app}/addons", f"/apps/{APP}/addons")
    def list_app_addons(req: Request, app: str) -> Response:
        return Response(200, read(app, lambda data, record: [expanded(req, addons.render(data, a))
                                                             for a in data["addons"].values()
                                                             if a["app_id"] == record["id"]]))

    @add("GET", "/apps/{app}/addons/{addon}", f"/apps/{APP}/addons/{_ref('add-on')}")
    def app_addon_info(req: Request, app: str, addon: str) -> Response:
        def attached(data: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
            found = addons.find(data, addon, record)
            if found["app_id"] != record["id"] and not any(
                    a["addon_id"] == found["id"] and a["app_id"] == record["id"] for a in data["attachments"].values()):
                raise not_found("add-on")
            return expanded(req, addons.render(data, found))

        return Response(200, read(app, attached))

    @add("DELETE", "/apps/{app}/addons/{addon}", f"/apps/{APP}/addons/{_ref('add-on')}")
    def delete_addon(req: Request, app: str, addon: str) -> Response:
        return Response(200, addons.destroy(app, addon))

    @add("GET", "/addons", "/addons")
    def list_addons(req: Request) -> Response:
        with store.lock:
            data = store.data
            return Response(200, [expanded(req, addons.render(data, a)) for a in data["addons"].values()])

    @add("GET", "/addons/{addon}", f"/addons/{_ref('add-on')}")
    def addon_info(req: Request, addon: str) -> Response:
        with store.lock:
            return Response(200, expanded(req, addons.render(store.data, addons.find(store.data, addon))))

    # --- add-on attachments ----------------------------------------------------------------------

    @add("POST", "/addon-attachments", "/addon-attachments")
    def create_attachment(req: Request) -> Response:
        return Response(201, addons.create_attachment(req.json_object()))

    @add("GET", "/addon-attachments", "/addon-attachments")
    def list_attachments(req: Request) -> Response:
        return Response(200, addons.list_attachments(include=header_words(req, "Accept-Inclusion")))

    @add("GET", "/addon-attachments/{attachment}", f"/addon-attachments/{_ref('add-on-attachment')}")
    def attachment_info(req: Request, attachment: str) -> Response:
        return Response(200, addons.attachment_info(attachment, include=header_words(req, "Accept-Inclusion")))

    @add("DELETE", "/addon-attachments/{attachment}", f"/addon-attachments/{_ref('add-on-attachment')}")
    def delete_attachment(req: Request, attachment: str) -> Response:
        return Response(200, addons.delete_attachment(attachment))

    @add("GET", "/apps/{app}/addon-attachments", f"/apps/{APP}/addon-attachments")
    def app_attachments(req: Request, app: str) -> Response:
        return Response(200, addons.list_attachments(app_ident=app, include=header_words(req, "Accept-Inclusion")))

    @add("GET", "/apps/{app}/addon-attachments/{attachment}",
         f"/apps/{APP}/addon-attachments/{_ref('add-on-attachment', 'scopedIdentity')}")
    def app_attachment_info(req: Request, app: str, attachment: str) -> Response:
        return Response(200, addons.attachment_info(attachment, app_ident=app, include=header_words(req, "Accept-Inclusion")))

    @add("GET", "/addons/{addon}/addon-attachments", f"/addons/{_ref('add-on')}/addon-attachments")
    def addon_attachments(req: Request, addon: str) -> Response:
        return Response(200, addons.list_attachments(addon_ident=addon, include=header_words(req, "Accept-Inclusion")))

    @add("POST", "/actions/addon-attachments/resolve", "/actions/addon-attachments/resolve")
    def resolve_attachments(req: Request) -> Response:
        return Response(200, addons.resolve_attachments(req.json_object(), include=header_words(req, "Accept-Inclusion")))

    # --- app webhooks ----------------------------------------------------------------------------

    @add("POST", "/apps/{app}/webhooks", f"/apps/{APP}/webhooks")
    def create_webhook(req: Request, app: str) -> Response:
        hook, secret = platform.create_webhook(app, req.json_object())
        return Response(201, hook, {"Heroku-Webhook-Secret": secret} if secret else {})

    @add("GET", "/apps/{app}/webhooks", f"/apps/{APP}/webhooks")
    def list_webhooks(req: Request, app: str) -> Response:
        return Response(200, read(app, lambda data, record: [resources.webhook(h, record)
                                                             for h in data["webhooks"].values()
                                                             if h["app_id"] == record["id"]]))

    @add("GET", "/apps/{app}/webhooks/{webhook}", f"/apps/{APP}/webhooks/{_ref('app-webhook')}")
    def webhook_info(req: Request, app: str, webhook: str) -> Response:
        return Response(200, read(app, lambda data, record: resources.webhook(
            platform.find_webhook(data, record, webhook), record)))

    @add("PATCH", "/apps/{app}/webhooks/{webhook}", f"/apps/{APP}/webhooks/{_ref('app-webhook')}")
    def update_webhook(req: Request, app: str, webhook: str) -> Response:
        return Response(200, platform.update_webhook(app, webhook, req.json_object()))

    @add("DELETE", "/apps/{app}/webhooks/{webhook}", f"/apps/{APP}/webhooks/{_ref('app-webhook')}")
    def delete_webhook(req: Request, app: str, webhook: str) -> Response:
        with store.change() as data:
            record = platform.find_app(data, app)
            hook = platform.find_webhook(data, record, webhook)
            del data["webhooks"][hook["id"]]
            return Response(200, resources.webhook(hook, record))
