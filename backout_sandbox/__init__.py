"""The sandbox: a local Heroku on loopback (Platform API and Data API subset), and the forge.

It imports nothing of backout: backout (its `sandbox` and `demo` commands, its tests) uses it, never
the other way round. `backout_sandbox.server.start()` runs a local Heroku in background threads;
`python -m backout_sandbox` (or `backout sandbox`) runs one in the foreground. Its parts:

- `core`: the HTTP core both sandboxes stand on: request, response and error types, the router, the
  JSON state store, the threaded server, the foreground main
- `server`: the local Heroku's server: auth, API version, rate limit, faults; `start`, `Sandbox`, `serve`
- `platform_routes`, `data_routes`: the routes (each Platform route names its official schema link)
- `routing`: Heroku's error shape and Range pagination
- `platform`: apps, slugs, releases and the release phase, config vars, formation, dynos, webhooks
- `addons`, `databases`, `pitr`: heroku-postgresql add-ons on real databases, point-in-time rollback
- `transfers`: Data API backups (pg_dump) and restores (pg_restore)
- `dynos`, `processes`, `app_router`: dynos as supervised local processes behind a per-app router
- `store`, `slugs`, `signed_urls`, `webhooks`, `faults`, `ratelimit`, `resources`

`forge` is the other sandbox: the GitHub and PyPI subset that package rollbacks use
(`python -m backout_sandbox.forge`).
"""
