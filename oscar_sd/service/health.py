"""The warm replica's health endpoint: ``GET /health`` (also under ``OSCAR_SERVICE_BASE_PATH``).

200 with a small JSON body when the model is loaded and the replica hears about
new inputs (its listen stream is open, or reconciliation ran recently); 503
with the same body otherwise. OSCAR probes the exposed service's
``expose.health_path`` for readiness and liveness (grycap/oscar
``docs/exposed-services.md``); with the default ``rewrite_target: false`` the
Ingress strips the base path, with ``true`` it keeps it, so both are served.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

#: (healthy, details) of the replica right now.
HealthCheck = Callable[[], tuple[bool, dict[str, Any]]]


class HealthServer:
    """A small threaded HTTP server in a daemon thread."""

    def __init__(self, check: HealthCheck, host: str, port: int, base_path: str = "") -> None:
        paths = {"/health", "/health/"}
        if base_path.strip("/"):
            base = "/" + base_path.strip("/")
            paths |= {base + "/health", base + "/health/"}

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?", 1)[0] not in paths:
                    self._answer(404, {"error": "not found; try /health"})
                    return
                healthy, details = check()
                self._answer(200 if healthy else 503, details)

            def _answer(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # probes every few seconds would flood the log

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="warm-health",
                                        daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
