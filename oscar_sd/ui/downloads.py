"""``GET download/<run>.zip``: a run's images in one zip, for the login that made them only.

The PNG files go in as they are (stored, not compressed again: PNG already
is), so each keeps its generation parameters. A run is named by its folder's
random name; the route answers 404 to anyone but the run's owner, exactly as
the file guard (``http.py``) does for single images, and to a run no longer
on disk. Without login (local mode) the run's unguessable name is the key,
as for the images themselves.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable
from pathlib import Path

import anyio
from starlette.requests import HTTPConnection, Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from .sessions import Sessions, is_tab_key

#: The path below the app's root; page links are relative to it (works under a subpath).
DOWNLOADS = "download"


def download_route(sessions: Sessions, identify: Callable[[HTTPConnection], str | None]) -> Route:
    """The route that zips a run's images for their owner."""

    async def download(request: Request) -> Response:
        run = request.path_params["run"]
        found = sessions.run_of(run)
        if found is not None:
            session, entry = found
            if is_tab_key(session.key) or identify(request) == session.key:
                data = await anyio.to_thread.run_sync(zip_images, entry.images)
                return Response(
                    data,
                    media_type="application/zip",
                    headers={
                        "Content-Disposition": f'attachment; filename="oscar-sd-{run}.zip"',
                        "Cache-Control": "private, no-store",
                    },
                )
        return PlainTextResponse("Not found", status_code=404)

    return Route(f"/{DOWNLOADS}/{{run}}.zip", download, methods=["GET"])


def zip_images(images: list[str]) -> bytes:
    """The images in a zip, by their names (``1.png`` …), stored as they are."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for image in images:
            path = Path(image)
            if path.is_file():  # a run being deleted by the budget may lose files
                archive.write(path, arcname=path.name)
    return buffer.getvalue()
