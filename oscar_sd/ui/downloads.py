"""``GET download/<run>.zip``: a run's images in one zip, for the login that made them only.

The PNG files go in as they are (stored, not compressed again: PNG already
is), so each keeps its generation parameters. A run is named by its folder's
random name; the files are named for people (the prompt's start, the seed and the
place in the run: ``a-red-fox-in-the-snow-42-3.png``), so that runs do not collide
in a downloads folder. The route answers 404 to anyone but the run's owner, exactly as
the file guard (``http.py``) does for single images, and to a run no longer
on disk. Without login (local mode) the run's unguessable name is the key,
as for the images themselves.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import quote

import anyio
from starlette.requests import HTTPConnection, Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from .form import image_seed_of_run
from .sessions import Sessions, is_tab_key

#: The path below the app's root; page links are relative to it (works under a subpath).
DOWNLOADS = "download"


def download_name(prompt: str, seed: int | None, index: int | None = None) -> str:
    """``a-red-fox-in-the-snow-42-3.png`` for image ``index`` (1-based) with its own seed;
    ``a-red-fox-in-the-snow-42.zip`` for a run (``index`` None).

    Letters and digits of any script are kept; everything else (spaces, punctuation,
    bidi controls, path separators) becomes one ``-``.
    """
    words = re.sub(r"[\W_]+", "-", prompt.lower()).strip("-")[:40].rstrip("-") or "image"
    seed_part = "" if seed is None else f"-{seed}"
    return f"{words}{seed_part}-{index}.png" if index is not None else f"{words}{seed_part}.zip"


def download_route(sessions: Sessions, identify: Callable[[HTTPConnection], str | None]) -> Route:
    """The route that zips a run's images for their owner."""

    async def download(request: Request) -> Response:
        run = request.path_params["run"]
        found = sessions.run_of(run)
        if found is not None:
            session, entry = found
            if is_tab_key(session.key) or identify(request) == session.key:
                await sessions.materialise(session, entry)
                names = image_names(entry.prompt, entry.seed, len(entry.images))
                data = await anyio.to_thread.run_sync(zip_images, entry.images, names)
                name = download_name(entry.prompt, entry.seed)
                # RFC 6266: an ASCII name for old clients, the UTF-8 one for the rest.
                ascii_name = name.encode("ascii", "replace").decode().replace("?", "_")
                return Response(
                    data,
                    media_type="application/zip",
                    headers={
                        "Content-Disposition": f'attachment; filename="{ascii_name}"; '
                                               f"filename*=UTF-8''{quote(name)}",
                        "Cache-Control": "private, no-store",
                    },
                )
        return PlainTextResponse("Not found", status_code=404)

    return Route(f"/{DOWNLOADS}/{{run}}.zip", download, methods=["GET"])


def image_names(prompt: str, seed: int | None, count: int) -> list[str]:
    """The download names of a run's ``count`` images: image ``i`` of a run with seed
    ``S`` has seed ``S + i - 1`` (the service's rule, oscar_sd/service/metadata.py)."""
    return [download_name(prompt, image_seed_of_run(seed, i), i + 1) for i in range(count)]


def zip_images(images: list[str], names: Sequence[str] | None = None) -> bytes:
    """The images in a zip, stored as they are, each under its name in ``names``
    (default: its file name)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for position, image in enumerate(images):
            path = Path(image)
            if path.is_file():  # a run being deleted by the budget may lose files
                archive.write(path, arcname=names[position] if names else path.name)
    return buffer.getvalue()
