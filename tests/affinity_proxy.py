"""A small reverse proxy that keeps cookie affinity as ingress-nginx does for
``manifests/deploy_gradio.yaml`` (``affinity: cookie``, cookie ``oscar-sd-route``,
``affinity-mode: persistent``): a visitor without the cookie is given a backend
(round robin) and the cookie naming it; with it, every request goes there; when
that backend no longer answers (its pod restarted or went away), ingress-nginx
picks another upstream and sets the cookie anew, and so does this proxy.

Responses stream through unbuffered (Gradio's events are server-sent), as the
Ingress's ``proxy-buffering: off`` asks.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import AsyncIterator

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.ui_fixtures import free_port

COOKIE = "oscar-sd-route"
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
              "proxy-authorization", "proxy-authenticate", "content-length"}


class AffinityProxy:
    """Proxies to ``backends`` (base URLs) with a sticky cookie; ``url`` is its address."""

    def __init__(self, backends: list[str]) -> None:
        self.backends = backends
        self.routed: list[int] = []  # which backend each request went to
        self._next = itertools.cycle(range(len(backends)))
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(60, connect=2))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        app = Starlette(routes=[Route("/{path:path}", self._proxy, methods=[
            "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"])])
        self._server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port,
                                                     log_level="warning", lifespan="off"))
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def __enter__(self) -> AffinityProxy:
        self._thread.start()
        while not self._server.started:
            threading.Event().wait(0.02)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.should_exit = True
        self._thread.join(10)

    async def _proxy(self, request: Request) -> Response:
        body = await request.body()
        chosen = request.cookies.get(COOKIE, "")
        order = [int(chosen)] if chosen.isdigit() and int(chosen) < len(self.backends) else []
        order += [next(self._next) for _ in self.backends]
        for index in dict.fromkeys(order):
            target = self.backends[index].rstrip("/") + request.url.path
            if request.url.query:
                target += "?" + request.url.query
            headers = [(k, v) for k, v in request.headers.items() if k.lower() != "host"]
            headers.append(("host", f"127.0.0.1:{self.port}"))
            upstream = self._client.build_request(request.method, target, headers=headers,
                                                  content=body)
            try:
                answer = await self._client.send(upstream, stream=True)
            except httpx.TransportError:
                continue  # this upstream is gone: the next one
            self.routed.append(index)
            kept = [(k, v) for k, v in answer.headers.multi_items()
                    if k.lower() not in HOP_BY_HOP]

            async def relay(answer: httpx.Response = answer) -> AsyncIterator[bytes]:
                async for chunk in answer.aiter_raw():
                    yield chunk

            response = StreamingResponse(relay(), status_code=answer.status_code,
                                         background=BackgroundTask(answer.aclose))
            response.raw_headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in kept]
            if chosen != str(index):
                response.set_cookie(COOKIE, str(index), max_age=86400, samesite="lax")
            return response
        return PlainTextResponse("502 Bad Gateway", status_code=502)
