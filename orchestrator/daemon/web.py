"""``/healthz`` and ``/metrics`` for `orch daemon --http-port`, on the standard library's
threading HTTP server (two read-only endpoints need no framework)."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST

log = logging.getLogger("orch.daemon")

Health = Callable[[], tuple[bool, dict[str, Any]]]


def serve(
    port: int, health: Health, metrics: Callable[[], bytes], host: str = "0.0.0.0"
) -> ThreadingHTTPServer:
    """Start serving on ``host:port`` in a background thread; ``shutdown()`` stops it."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the standard library's name
            path = self.path.split("?")[0]
            if path == "/healthz":
                ok, body = health()
                self._send(200 if ok else 503, "application/json", json.dumps(body).encode())
            elif path == "/metrics":
                self._send(200, CONTENT_TYPE_LATEST, metrics())
            else:
                self._send(404, "text/plain", b"not found: try /healthz or /metrics\n")

        def _send(self, code: int, kind: str, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            log.debug("http: " + format, *args)

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    return server
