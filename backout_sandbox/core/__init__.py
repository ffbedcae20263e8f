"""The HTTP core both sandboxes stand on: the local Heroku (`backout_sandbox`) and the forge
(`backout_sandbox.forge`, GitHub and PyPI).

- `messages`: `Request`, `Response`, and `HttpError`, the error that is its own answer
- `router`: `Router`, path patterns with `{name}` parameters
- `paging`: the two ways the APIs page a list (Heroku's `Range` header, GitHub's `Link` header)
- `store`: `JsonStore`, state in one JSON file rewritten atomically after every change
- `server`: `HttpServer`, a threaded HTTP/1.1 server on loopback that answers with an app
- `main`: `StartError`, and `serve_until_stopped`, the foreground loop of both `main()`s
"""
