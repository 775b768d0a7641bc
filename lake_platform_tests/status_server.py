"""A tiny HTTP server on 127.0.0.1 that answers one status to every request: an S3 endpoint
that is up but failing (500, 503)."""

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from lake_platform.embedded_nats import HOST


class _Handler(BaseHTTPRequestHandler):
    status = 503

    def _answer(self) -> None:
        if self.headers.get("Expect", "").lower() != "100-continue":
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
        # else the client waits for this answer before sending its body: answer at once
        # An HTML page, as a proxy in front of a failing store would answer, not S3 XML.
        body = f"<html><body>{self.status} injected failure</body></html>".encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.server.requests += 1  # type: ignore[attr-defined]

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _answer

    def log_message(self, format: str, *args: object) -> None:
        """Silent: the test counts requests instead."""


class StatusServer(ThreadingHTTPServer):
    """Counts the requests it answered, in `requests`."""

    requests = 0

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self.server_address[1]}"


@contextmanager
def answering(status: int) -> Iterator[StatusServer]:
    """A server answering `status` to everything, on a free port, stopped on leaving."""
    handler = type("Handler", (_Handler,), {"status": status})
    server = StatusServer((HOST, 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
