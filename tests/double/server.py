"""Serve a WSGI app on 127.0.0.1 in a daemon thread, one thread per connection.

werkzeug's threaded dev server parses the requests; the handler here answers
them on kept-alive connections, where werkzeug's own closes the connection
after every answer and so would have the client connect anew for every
request. MinIO keeps connections open: minio/minio ``internal/http/server.go``
embeds Go's ``http.Server`` (keep-alives on by default), closes idle ones
after 30 s and sends ``Connection: close`` only while it shuts down. OSCAR
serves its API with gin on the same ``net/http`` server. A stop also ends
open connections, so no listen stream outlives its double.
"""

from __future__ import annotations

import socket
import struct
import threading
import traceback
from collections.abc import Callable
from typing import Any

from moto.moto_server.werkzeug_app import MotoRequestHandler
from werkzeug.serving import ThreadedWSGIServer, make_server
from werkzeug.wsgi import LimitedStream


class _KeepAliveHandler(MotoRequestHandler):
    """Answers on a kept-alive HTTP/1.1 connection; a body without a length goes as chunks."""

    protocol_version = "HTTP/1.1"

    def log(self, type: str, message: str, *args: Any) -> None:
        if type != "info":  # tests would drown in access logs; errors still show
            super().log(type, message, *args)

    def run_wsgi(self) -> None:
        if self.headers.get("Expect", "").lower().strip() == "100-continue":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        environ = self.environ = self.make_environ()
        body: LimitedStream | None = None
        if environ.get("wsgi.input_terminated"):
            self.close_connection = True  # a chunked upload: its end is the app's to find
        else:  # what the app leaves unread is read below, before the next request
            body = LimitedStream(self.rfile, int(environ.get("CONTENT_LENGTH") or 0))
            environ["wsgi.input"] = body
        answer = _Answer(self)
        try:
            chunks = self.server.app(environ, answer.start)
            try:
                for chunk in chunks:
                    answer.write(chunk)
                answer.end()
            finally:
                if hasattr(chunks, "close"):
                    chunks.close()
        except (ConnectionError, TimeoutError):
            self.close_connection = True  # the client went away (a listen stream ended)
            return
        except Exception:
            self.close_connection = True
            self.log_error("%s", traceback.format_exc())
            if not answer.started:
                answer.fail()
            return
        if body is not None:
            body.exhaust()


class _Answer:
    """One response on the handler's connection: status, headers, then the body."""

    def __init__(self, handler: _KeepAliveHandler) -> None:
        self.handler = handler
        self.status = ""
        self.headers: list[tuple[str, str]] = []
        self.started = False
        self.chunked = False

    def start(self, status: str, headers: list[tuple[str, str]],
              exc_info: Any = None) -> Callable[[bytes], None]:
        if exc_info is not None and self.started:
            raise exc_info[1].with_traceback(exc_info[2])
        self.status, self.headers = status, headers
        return self.write

    def write(self, data: bytes) -> None:
        out = self.handler.wfile
        if not self.started:
            self._send_head()
        if data:
            out.write(b"%x\r\n%b\r\n" % (len(data), data) if self.chunked else data)
        out.flush()

    def end(self) -> None:
        if not self.started:
            self._send_head()
        if self.chunked:
            self.handler.wfile.write(b"0\r\n\r\n")
        self.handler.wfile.flush()

    def fail(self) -> None:
        self.status, self.headers = "500 INTERNAL SERVER ERROR", [("Content-Length", "0")]
        self.end()

    def _send_head(self) -> None:
        handler = self.handler
        code, _, reason = self.status.partition(" ")
        handler.send_response(int(code), reason)
        for name, value in self.headers:
            handler.send_header(name, value)
        names = {name.lower() for name, _ in self.headers}
        bodiless = handler.command == "HEAD" or int(code) in (204, 304) or int(code) < 200
        if "content-length" not in names and not bodiless:
            self.chunked = True
            handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        self.started = True


class LoopbackServer:
    """A started-on-demand WSGI server bound to a random free loopback port."""

    def __init__(self, app: Any, name: str) -> None:
        self._server: ThreadedWSGIServer = make_server(
            "127.0.0.1", 0, app, threaded=True, request_handler=_KeepAliveHandler)
        self._server.daemon_threads = True
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._wrap_connection_tracking()
        self._started = False
        self._name = name
        self._thread = self._serving_thread()
        self._restart_lock = threading.Lock()
        self._stopped = threading.Event()
        #: How many restarts finished (the socket listens again).
        self.restarts = 0

    @property
    def port(self) -> int:
        return self._server.server_port

    @property
    def port_number(self) -> int:
        """The port, also while restarting (then no socket listens on it)."""
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port_number}"

    def start(self) -> None:
        self._thread.start()
        self._started = True

    def stop(self) -> None:
        self._stopped.set()  # a restart under way does not listen again
        with self._restart_lock:
            if self._started:
                self._server.shutdown()
            self._server.server_close()
            self._reset_connections(abort=False)
            self._thread.join(timeout=5)

    def restart(self, refuse_for: float) -> threading.Thread:
        """Go away and come back as a restarting MinIO does; returns the thread doing it.

        MinIO's restart (minio/minio ``internal/http/server.go`` ``Shutdown``, then
        ``cmd/service.go`` ``restartProcess``, a ``syscall.Exec``): the listening
        socket closes, so new connections are refused; the exec closes every open
        and idle kept-alive connection, which clients see reset; after
        ``refuse_for`` seconds the new process listens on the same port again.
        """
        thread = threading.Thread(target=self._restart, args=(refuse_for,),
                                  name=f"double-{self._name}-restart", daemon=True)
        thread.start()
        return thread

    def _restart(self, refuse_for: float) -> None:
        with self._restart_lock:
            if self._stopped.is_set() or not self._started:
                return
            listening = self._server.socket
            try:  # refused from now on; accept() in serve_forever fails and it sees the stop
                listening.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._server.shutdown()
            listening.close()
            self._reset_connections(abort=True)
            self._thread.join(timeout=5)
            if self._stopped.wait(refuse_for):
                return
            fresh = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            fresh.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            fresh.bind(("127.0.0.1", self.port_number))
            fresh.listen(self._server.request_queue_size)
            self._server.socket = fresh
            self._thread = self._serving_thread()
            self._thread.start()
            self.restarts += 1

    def _serving_thread(self) -> threading.Thread:
        return threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
            name=f"double-{self._name}", daemon=True)

    def _reset_connections(self, abort: bool) -> None:
        """End every open connection (waking handler threads blocked on a client);
        ``abort``: with a reset (RST) rather than an orderly close, as a process that
        dies or execs leaves them."""
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            try:
                if abort:  # linger 0: the handler's close sends RST
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _wrap_connection_tracking(self) -> None:
        server, connections, lock = self._server, self._connections, self._lock
        process, shutdown = server.process_request, server.shutdown_request

        # Tracked as it is accepted, in the serving thread (not once its handler thread
        # runs): a restart, which stops that thread first, then finds every connection.
        def process_request(request: socket.socket, client_address: Any) -> None:
            with lock:
                connections.add(request)
            # Go's TCP connections send at once (net/tcpsock.go newTCPConn sets
            # TCP_NODELAY), as MinIO's and OSCAR's do. Without it an answer written as
            # head, then body waits for the client's delayed ACK: 40 ms a request.
            request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            process(request, client_address)

        def shutdown_request(request: socket.socket) -> None:
            with lock:
                connections.discard(request)
            shutdown(request)

        server.process_request = process_request  # type: ignore[method-assign]
        server.shutdown_request = shutdown_request  # type: ignore[method-assign]
