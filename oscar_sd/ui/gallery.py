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
or its second pass of path checks.

An instance is adapted rather than subclassed: Gradio writes a ``.pyi`` stub
beside the module of every Component subclass when it is defined, which a
read-only container filesystem refuses.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import gradio as gr
from gradio.components.gallery import GalleryData, GalleryImage
from gradio.data_classes import ImageData


def gallery_value(
    images: Sequence[str | tuple[str, str]], names: Sequence[str] | None = None
) -> list[dict[str, object]]:
    """A gallery of PNG files (paths, or (path, caption) pairs), as ``Gallery.postprocess``
    gives it for paths; ``names`` are what the download button saves them as (default:
    the file's name)."""
    shown = []
    for position, image in enumerate(images):
        path, caption = image if isinstance(image, tuple) else (image, None)
        name = names[position] if names else Path(path).name
        data = ImageData(path=path, orig_name=name, mime_type="image/png")
        shown.append(GalleryImage(image=data, caption=caption))
    return GalleryData(root=shown).model_dump()  # type: ignore[arg-type]


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
    return gallery
