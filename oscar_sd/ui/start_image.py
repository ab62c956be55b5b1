"""The start image of image to image, as the page or a ``gradio_client`` caller sends it.

The page's image box uploads the file to Gradio first and sends its file data
(``{"path": ...}``); Gradio checks that the path lies in its upload folder
before the handler runs (``blocks.py`` ``preprocess_data`` moves inputs to the
cache with ``check_in_upload_folder``, even with ``preprocess=False``), and
this module checks it again. ``gradio_client`` sends the same with
``handle_file("fox.png")``. Text (a path, base64) is refused by Gradio's own
check of the image box's data, before the handler: no path given as text is
ever read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio.to_thread
from gradio.utils import get_upload_folder

from .._errors import InvalidRequestError
from .._models import MAX_START_IMAGE_BYTES

NOT_UPLOADED = "must be an image uploaded with the page (or gradio_client's handle_file)"


async def start_image_of(value: Any) -> bytes | None:
    """The start image's bytes; None when the box is empty."""
    if not value:  # None, "", or an empty list from an older page
        return None
    path = value.get("path") if isinstance(value, dict) else None
    if not isinstance(path, str):
        raise InvalidRequestError("init_image", NOT_UPLOADED)
    return await anyio.to_thread.run_sync(_read_upload, Path(path))


def _read_upload(path: Path) -> bytes:
    folder = Path(get_upload_folder()).resolve()
    try:
        resolved = path.resolve(strict=True)
        inside = resolved.is_relative_to(folder) and resolved.is_file()
        size = resolved.stat().st_size if inside else 0
    except OSError:
        inside = False
    if not inside:
        raise InvalidRequestError("init_image", NOT_UPLOADED)
    if size > MAX_START_IMAGE_BYTES:
        raise InvalidRequestError(
            "init_image", f"is {size / 2**20:.1f} MiB; the limit is "
            f"{MAX_START_IMAGE_BYTES // 2**20} MiB (save it smaller, or as JPEG)")
    return resolved.read_bytes()
