"""Serve a WSGI app on 127.0.0.1 in a daemon thread, one thread per connection.

werkzeug's threaded dev server does the HTTP (chunked responses included);
this adds a quiet handler and a stop that also ends open connections, so no
listen stream outlives its double.
"""

from __future__ import annotations

import socket
import threading
from typing import Any

from moto.moto_server.werkzeug_app import MotoRequestHandler
from werkzeug.serving import ThreadedWSGIServer, make_server


class _QuietHandler(MotoRequestHandler):
    # HTTP/1.1 is what makes werkzeug stream a body without Content-Length as chunks.
    protocol_version = "HTTP/1.1"

    def log(self, type: str, message: str, *args: Any) -> None:
        if type != "info":  # tests would drown in access logs; errors still show
            super().log(type, message, *args)


class LoopbackServer:
    """A started-on-demand WSGI server bound to a random free loopback port."""

    def __init__(self, app: Any, name: str) -> None:
        self._server: ThreadedWSGIServer = make_server(
            "127.0.0.1", 0, app, threaded=True, request_handler=_QuietHandler)
        self._server.daemon_threads = True
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._wrap_connection_tracking()
        self._started = False
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
            name=f"double-{name}", daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._thread.start()
        self._started = True

    def stop(self) -> None:
        if self._started:
            self._server.shutdown()
        self._server.server_close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:  # wakes handler threads blocked on a client
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(timeout=5)

    def _wrap_connection_tracking(self) -> None:
        server, connections, lock = self._server, self._connections, self._lock
        process, shutdown = server.process_request_thread, server.shutdown_request

        def process_request_thread(request: socket.socket, client_address: Any) -> None:
            with lock:
                connections.add(request)
            process(request, client_address)

        def shutdown_request(request: socket.socket) -> None:
            with lock:
                connections.discard(request)
            shutdown(request)

        server.process_request_thread = process_request_thread  # type: ignore[method-assign]
        server.shutdown_request = shutdown_request  # type: ignore[method-assign]
