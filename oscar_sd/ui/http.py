"""What the app adds to Gradio's HTTP server: a health probe, a file guard, a logout hook.

Gradio serves any file in its temp folder to any logged-in user who has the
URL (``/gradio_api/file=<path>``). The results live in that folder (so Gradio
serves them as they are, PNG with their metadata, without copies), in one
random-named folder per user; :class:`FileGuard` makes sure the folder's files
go to its owner only.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import unquote

from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from .sessions import Sessions, is_tab_key

FILE_ROUTE = "/gradio_api/file="


def current_user(connection: HTTPConnection) -> str | None:
    """The logged-in user of a request, from Gradio's login cookie (None without login)."""
    app = connection.scope.get("app")
    tokens: dict[str, str] = getattr(app, "tokens", {}) or {}
    cookie_id = getattr(app, "cookie_id", "")
    for name in (f"access-token-{cookie_id}", f"access-token-unsecure-{cookie_id}"):
        token = connection.cookies.get(name)
        if token and token in tokens:
            return tokens[token]
    return None


def health_route(
    describe: Callable[[], dict[str, object]],
) -> Callable[[Request], Awaitable[JSONResponse]]:
    """``GET /healthz``: 200 and a little JSON, no login, for Kubernetes probes."""

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", **describe()})

    return healthz


class FileGuard:
    """Serve a file under the results folder only to the user whose folder holds it.

    Anything else below the results folder (a folder no session owns, another
    user's folder) answers 404, as if it did not exist. Without login (local
    mode) there is no user to check: the random folder names protect the files.
    """

    def __init__(self, app: ASGIApp, sessions: Sessions) -> None:
        self.app = app
        self.sessions = sessions
        self.root = sessions.root

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and FILE_ROUTE in scope["path"]:
            requested = unquote(scope["path"].split(FILE_ROUTE, 1)[1])
            if not self._allowed(HTTPConnection(scope), requested):
                await PlainTextResponse("Not found", status_code=404)(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _allowed(self, connection: HTTPConnection, requested: str) -> bool:
        if requested.startswith(("http://", "https://")):
            return True  # Gradio's own (guarded) URL proxy; no file of ours
        path = Path(os.path.realpath(requested))
        if not path.is_relative_to(self.root):
            return True  # not a result: Gradio's own checks apply
        owner = self.sessions.owner_of(path)
        if owner is None:
            return False
        if is_tab_key(owner.key):
            return True
        return current_user(connection) == owner.key


class LogoutHook:
    """On ``/logout``, close the user's session (backend and files); then Gradio logs out."""

    def __init__(self, app: ASGIApp, sessions: Sessions) -> None:
        self.app = app
        self.sessions = sessions

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].rstrip("/").endswith("/logout"):
            user = current_user(HTTPConnection(scope))
            if user is not None:
                await self.sessions.close(user, "logout")
        await self.app(scope, receive, send)
