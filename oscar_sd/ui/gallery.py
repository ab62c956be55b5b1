"""Galleries that hand the app's result files to Gradio as they are.

For every file a handler returns, Gradio (``processing_utils.move_files_to_cache``,
twice per output) asks the component to "move it to the block cache": it
checks the file against its cache folder with ``is_in_or_equal``, which
resolves both paths on disk component by component, and adds it to the
component's ``temp_files`` set, which only grows. The results already lie in
Gradio's cache folder, in folders the app made, and the app's file guard
(``http.py``) serves them: for a path under the results folder (a string
check, no disk) the gallery answers "already in the cache" at once and keeps
no record of it (the sessions delete their own folders).

The events that fill a gallery skip Gradio's postprocessing (``postprocess=False``
in ``page.py``): :func:`gallery_value` gives the gallery's value in the form
``Gallery.postprocess`` would, without its thread pool (a new one per call)
or its second pass of path checks. Gradio still runs its cache step on every
output (``processing_utils.async_move_files_to_cache``), which for each file
asks whether it is a static file and whether it may be served, each answer a
``Path.resolve`` of the file and of every static or allowed folder on disk:
with the history strip's 24 thumbnails and the six results, 17% of the app's
CPU with 50 users. For a gallery of the app's results that step only names
each file's URL, which :func:`_urls_of_results` does with string checks alone.

An instance is adapted rather than subclassed: Gradio writes a ``.pyi`` stub
beside the module of every Component subclass when it is defined, which a
read-only container filesystem refuses.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gradio as gr
from gradio import processing_utils
from gradio.route_utils import API_PREFIX
from gradio_client.utils import encode_file_path

#: The attribute naming a gallery's results folder (set by serving_results_as_they_are).
RESULTS_HOME = "_oscar_sd_results_home"


def gallery_value(
    images: Sequence[str | tuple[str, str]], names: Sequence[str] | None = None
) -> list[dict[str, object]]:
    """A gallery of PNG files (paths, or (path, caption) pairs), as ``Gallery.postprocess``
    gives it for paths (``GalleryData(...).model_dump()``, written out: pydantic's took
    6% of the app's CPU at 50 users); ``names`` are what the download button saves them
    as (default: the file's name)."""
    shown: list[dict[str, object]] = []
    for position, image in enumerate(images):
        path, caption = image if isinstance(image, tuple) else (image, None)
        name = names[position] if names else Path(path).name
        shown.append({"image": {"path": path, "url": None, "size": None, "orig_name": name,
                                "mime_type": "image/png", "is_stream": False,
                                "meta": {"_type": "gradio.FileData"}},
                      "caption": caption})
    return shown


def serving_results_as_they_are(gallery: gr.Gallery, results_home: Path) -> gr.Gallery:
    """``gallery``, taking files under ``results_home`` (resolved) without cache bookkeeping."""
    home = str(results_home) + os.sep
    to_cache_async = gallery.async_move_resource_to_block_cache
    to_cache = gallery.move_resource_to_block_cache

    def is_result(path: str | Path | None) -> bool:
        # The app's paths are absolute and resolved (Sessions resolves its root and makes
        # every folder below it); normpath folds any "..".
        return path is not None and os.path.normpath(str(path)).startswith(home)

    async def move_to_cache_async(path: str | Path | None) -> str | None:
        return str(path) if is_result(path) else await to_cache_async(path)

    def move_to_cache(path: str | Path | None) -> str | None:
        return str(path) if is_result(path) else to_cache(path)

    gallery.async_move_resource_to_block_cache = move_to_cache_async  # type: ignore[method-assign]
    gallery.move_resource_to_block_cache = move_to_cache  # type: ignore[method-assign]
    setattr(gallery, RESULTS_HOME, home)
    _name_results_urls_directly()
    return gallery


def _urls_of_results(value: object, home: str) -> list[dict[str, object]] | None:
    """A gallery value (from :func:`gallery_value`) with each image's URL named, as
    Gradio's cache step would name it; None unless every image lies under ``home``."""
    if not isinstance(value, list):
        return None
    named = []
    for item in value:
        image = item.get("image") if isinstance(item, dict) else None
        path = image.get("path") if isinstance(image, dict) else None
        if not isinstance(path, str) or not os.path.normpath(path).startswith(home):
            return None
        url = f"{API_PREFIX}/file={encode_file_path(path)}"
        named.append({**item, "image": {**image, "url": url}})
    return named


def _name_results_urls_directly() -> None:
    """Wrap Gradio's cache step once: a results gallery's value gets its URLs from
    :func:`_urls_of_results`; anything else goes through Gradio's own step."""
    gradios = processing_utils.async_move_files_to_cache
    if getattr(gradios, "_results_named_directly", False):
        return

    async def move_files_to_cache(data: Any, block: Any, postprocess: bool = False,
                                  check_in_upload_folder: bool = False,
                                  keep_in_cache: bool = False) -> Any:
        home = getattr(block, RESULTS_HOME, None)
        if home is not None and postprocess and not keep_in_cache:
            named = _urls_of_results(data, home)
            if named is not None:
                return named
        return await gradios(data, block, postprocess=postprocess,
                             check_in_upload_folder=check_in_upload_folder,
                             keep_in_cache=keep_in_cache)

    move_files_to_cache._results_named_directly = True  # type: ignore[attr-defined]
    processing_utils.async_move_files_to_cache = move_files_to_cache
