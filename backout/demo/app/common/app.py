"""The demo's web app: a notes service with a health endpoint, on $PORT, backed by $DATABASE_URL."""

import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg

# What differs between the versions of the code (v1, v2) lives in queries.py.
from queries import CODE, COUNT_NOTES, LIST_NOTES, on_boot

RELEASE = os.environ.get("HEROKU_RELEASE_VERSION", "unknown")


def query(sql: str, params: tuple = ()) -> list[tuple]:
    with psycopg.connect(os.environ["DATABASE_URL"], connect_timeout=5) as conn:
        cur = conn.execute(sql, params)
        return cur.fetchall() if cur.description else []


def uploads():
    """The S3 client of the app's uploads (AWS_ENDPOINT_URL_S3 and the AWS_* variables, as boto3 reads them)."""
    import boto3  # imported when first needed: the dyno answers its first health checks sooner

    return boto3.client("s3")


class Handler(BaseHTTPRequestHandler):
    def answer(self, status: int, document: dict) -> None:
        body = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Release", RELEASE)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        try:
            if self.path == "/health":
                (count,), = query(COUNT_NOTES)
                self.answer(200, {"status": "ok", "code": CODE, "release": RELEASE, "notes": count})
            elif self.path == "/notes":
                rows = query(LIST_NOTES)
                self.answer(200, {"notes": [{"id": i, "body": b} for i, b in rows]})
            else:
                self.answer(404, {"error": "not found"})
        except Exception as exc:  # the health check must see a failure as a 500, not a dropped connection
            self.answer(500, {"status": "error", "code": CODE, "release": RELEASE, "error": type(exc).__name__})

    def do_POST(self) -> None:
        if self.path != "/notes":
            self.answer(404, {"error": "not found"})
            return
        length = int(self.headers.get("Content-Length") or 0)
        document = json.loads(self.rfile.read(length) or b"{}")
        body = document.get("body", "")
        (note_id,), = query("INSERT INTO notes (body) VALUES (%s) RETURNING id", (body,))
        if document.get("attachment"):
            uploads().put_object(Bucket=os.environ["UPLOADS_BUCKET"], Key=f"attachments/{note_id}.txt",
                                 Body=document["attachment"].encode())
        self.answer(201, {"id": note_id, "body": body})

    def log_message(self, format: str, *args) -> None:
        print(f"web: {self.command} {self.path} {args[1] if len(args) > 1 else ''}", flush=True)


if __name__ == "__main__":
    on_boot(uploads, os.environ.get("UPLOADS_BUCKET"))
    ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
