"""The sandbox: a local Heroku on loopback (Platform API and Data API subset).

`backout_sandbox.server.start()` runs one in background threads and `backout sandbox` runs one in
the foreground. Its parts:

- `server`: the HTTP server, auth, API version, rate limit, faults; `start`, `Sandbox`, `command`
- `platform_routes`, `data_routes`: the routes (each Platform route names its official schema link)
- `platform`: apps, slugs, releases and the release phase, config vars, formation, dynos, webhooks
- `addons`, `databases`, `pitr`: heroku-postgresql add-ons on real databases, point-in-time rollback
- `transfers`: Data API backups (pg_dump) and restores (pg_restore)
- `dynos`, `processes`, `app_router`: dynos as supervised local processes behind a per-app router
- `log_sessions`: `heroku logs` and `logs --tail`, the app's log as server-sent events
- `store`, `slugs`, `signed_urls`, `webhooks`, `faults`, `ratelimit`, `routing`, `resources`

`forge` is a separate sandbox: the GitHub and PyPI subset that package rollbacks use.
"""
