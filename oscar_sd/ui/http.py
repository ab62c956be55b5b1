"""What the app adds to Gradio's HTTP server: a health probe and a file guard.

Gradio serves any file in its temp folder to any logged-in user who has the
URL (``/gradio_api/file=<path>``, or its older spelling ``/gradio_api/file/<path>``).
The results live in that folder (so Gradio serves them as they are, PNG with
their metadata, without copies), in one random-named folder per user;
:class:`FileGuard` makes sure the folder's files go to its owner only, by
whichever route they are asked for.
"""

from __future__ import annotations

import html
import os
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from .sessions import Sessions, is_tab_key

# Gradio 6's routes that serve a file named in the URL (gradio/routes.py): ``file=``
# and ``file/`` (``file_deprecated``, which calls the same handler), for GET and HEAD.
# The others cannot reach the results folder: /static, /assets and /custom_component
# join the path under Gradio's own package folders (safe_join), /proxy= fetches only
# *.hf.space URLs of gr.load(), /stream/... serves the in-memory segments of streaming
# components, /run-history/... reads Hugging Face buckets, /favicon.ico and /pwa_icon
# serve the favicon; /upload only writes.
FILE_ROUTES = ("/gradio_api/file=", "/gradio_api/file/")


def requested_file(path: str) -> str | None:
    """The file a request path names through one of :data:`FILE_ROUTES`, else None.

    The earliest route in the path wins, as the path itself may spell the other.
    """
    found = [(path.find(route), route) for route in FILE_ROUTES if route in path]
    if not found:
        return None
    at, route = min(found)
    return path[at + len(route):]


def health_route(
    describe: Callable[[], dict[str, object]],
) -> Callable[[Request], Awaitable[JSONResponse]]:
    """``GET /healthz``: 200 and a little JSON, no login, for Kubernetes probes;
    503 while the app drains before it stops (``drain.py``)."""

    async def healthz(request: Request) -> JSONResponse:
        described = {"status": "ok", **describe()}
        return JSONResponse(described, status_code=503 if described["status"] != "ok" else 200)

    return healthz


class FileGuard:
    """Serve a file under the results folder only to the user whose folder holds it.

    Anything else below the results folder (a folder no session owns, another
    user's folder, a file that is not an image) answers 404, as if it did not
    exist. Without login (local mode) there is no user to check: the random
    folder names protect the files.
    """

    def __init__(
        self, app: ASGIApp, sessions: Sessions, identify: Callable[[HTTPConnection], str | None]
    ) -> None:
        self.app = app
        self.sessions = sessions
        self.identify = identify
        self.root = sessions.root

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Already percent-decoded once by the server, exactly as Gradio's route sees it.
        requested = requested_file(scope["path"]) if scope["type"] == "http" else None
        if requested is None:
            await self.app(scope, receive, send)
            return
        if requested.startswith(("http://", "https://")):
            await self.app(scope, receive, send)  # Gradio's own guarded URL proxy
            return
        path = await self._resolve(requested)
        if not path.is_relative_to(self.root):
            await self.app(scope, receive, send)  # not a result: Gradio's own checks apply
            return
        owner = self.sessions.owner_of(path)
        allowed = owner is not None and (
            is_tab_key(owner.key) or self.identify(HTTPConnection(scope)) == owner.key
        )
        if not allowed or path.suffix.lower() != ".png":
            response: Response = PlainTextResponse("Not found", status_code=404)
        else:
            response = await _image_response(path, head=scope["method"] == "HEAD")
        await response(scope, receive, send)

    async def _resolve(self, requested: str) -> Path:
        """The file a request names, resolved like Gradio resolves it.

        A path spelled inside the results folder is resolved on paper: nothing
        in there is a symlink (the app makes only folders and the unpacker only
        plain files). Any other path is resolved on disk, off the event loop, so
        that a symlinked temp folder cannot route around the check.
        """
        spelled = _normalised(requested)
        if spelled.is_absolute() and spelled.is_relative_to(self.root):
            return spelled
        return Path(await anyio.to_thread.run_sync(os.path.realpath, requested))


async def _image_response(path: Path, *, head: bool) -> Response:
    """The owner's own image, as the file it is (PNG with its metadata).

    Read whole in one trip to a worker thread: a starlette FileResponse takes
    one trip per 64 KiB chunk (and more for stat, open and close), and those
    hand-offs were the largest part of serving six images per click.
    """
    try:
        data = await anyio.to_thread.run_sync(_stat_size if head else _read, path)
    except FileNotFoundError:  # deleted meanwhile (logout, results budget)
        return PlainTextResponse("Not found", status_code=404)
    headers = {
        "Content-Disposition": f'inline; filename="{path.name}"',
        "Cache-Control": "private, max-age=3600",
    }
    if isinstance(data, int):
        headers["Content-Length"] = str(data)
        return Response(None, media_type="image/png", headers=headers)
    return Response(data, media_type="image/png", headers=headers)


def _read(path: Path) -> bytes:
    return path.read_bytes()


def _stat_size(path: Path) -> int:
    return path.stat().st_size


def _normalised(path: str) -> Path:
    """``path`` with ``.``, ``..`` and doubled slashes folded away: string work, no disk."""
    return Path(os.path.normpath(path))


#: Gradio's page template (templates/frontend/index.html) carries its own social
#: tags ("Gradio", "Click to try out the app!", its header image); link previews
#: show the first ones found, so they are taken out and the app's own put first.
_GRADIO_META = re.compile(
    rb'\s*<meta\s+(?:property="og:[a-z]+"|name="twitter:[a-z]+")\s+content="[^"]*"\s*/>'
)


def page_meta(title: str, description: str) -> bytes:
    """The app's own title and social tags, for the head of the main page."""
    title_text, said = html.escape(title), html.escape(description)
    return (
        f'<meta property="og:title" content="{title_text}" />'
        f'<meta property="og:description" content="{said}" />'
        '<meta property="og:type" content="website" />'
        '<meta name="twitter:card" content="summary" />'
        f'<meta name="twitter:title" content="{title_text}" />'
        f'<meta name="twitter:description" content="{said}" />'
    ).encode()


class PageMeta:
    """Puts the app's title and description in the main page's social tags.

    Only a GET of the page itself (an HTML answer) is rewritten; everything
    else passes straight through.
    """

    def __init__(self, app: ASGIApp, title: str, description: str) -> None:
        self.app = app
        self.meta = page_meta(title, description)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET" or not _is_page(scope):
            await self.app(scope, receive, send)
            return
        start: dict[str, Any] = {}
        body: list[bytes] = []

        async def hold(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
                return
            if message["type"] != "http.response.body":
                await send(message)
                return
            body.append(message.get("body", b""))
            if message.get("more_body"):
                return
            headers = dict(start.get("headers", []))
            page = b"".join(body)
            if headers.get(b"content-type", b"").startswith(b"text/html"):
                page = _GRADIO_META.sub(b"", page).replace(b"<head>", b"<head>" + self.meta, 1)
            start["headers"] = [
                (name, str(len(page)).encode() if name == b"content-length" else value)
                for name, value in start.get("headers", [])
            ]
            await send(start)
            await send({"type": "http.response.body", "body": page})

        await self.app(scope, receive, hold)


def _is_page(scope: Scope) -> bool:
    root = scope.get("root_path", "").rstrip("/")
    path = scope["path"]
    return path in ("/", "") or path in (root, root + "/")
