"""The app: GET / answers with the release serving it and the columns of its table."""

import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        with psycopg.connect(os.environ["DATABASE_URL"]) as conn:
            columns = [c for (c,) in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'greetings' ORDER BY ordinal_position")]
        body = f"{os.environ['HEROKU_RELEASE_VERSION']}: {os.environ.get('GREETING', 'hello')}, greetings has {', '.join(columns)}\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(body.encode())


ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
