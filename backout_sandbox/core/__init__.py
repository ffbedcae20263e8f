"""The HTTP core both sandboxes stand on: the local Heroku (`backout_sandbox`) and the forge
(`backout_sandbox.forge`, GitHub and PyPI).

- `messages`: `Request`, `Response`, `HttpError` (the error that is its own answer), and `Refused`
  (what the core turns down, which each API words its own way)
- `router`: `Router`, path patterns with `{name}` parameters
- `store`: `JsonStore`, state in one JSON file rewritten atomically after every change
- `server`: `HttpServer`, a threaded HTTP/1.1 server on loopback that answers with an app
- `main`: the common arguments, `serve_until_stopped` (the foreground loop) and `run`
- `errors`: `SandboxError` and `StartError`, the sandboxes' own errors
"""
