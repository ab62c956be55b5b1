"""A gr.Gallery that hands the app's result files to Gradio as they are.

For every file a handler returns, Gradio (``processing_utils.move_files_to_cache``,
twice per output) checks it against its cache folder with ``is_in_or_equal``,
which resolves both paths on disk, component by component, and then adds it to
the component's ``temp_files`` set, which only grows. The results already lie
in Gradio's cache folder, in folders the app made, and the app's file guard
(``http.py``) serves them: for a path under the results folder (a string check,
no disk) the gallery answers "already in the cache" at once and keeps no
record of it (the sessions delete their own folders).
"""

from __future__ import annotations

import os
from pathlib import Path

import gradio as gr


class ResultsGallery(gr.Gallery):
    """gr.Gallery for images the app made under :attr:`results_home`."""

    #: The resolved folder that holds every app instance's results (``WebApp`` sets it).
    results_home: str = ""

    @classmethod
    def get_block_name(cls) -> str:
        return "gallery"  # the browser draws it as the gallery it is

    def _is_result(self, path: str) -> bool:
        home = ResultsGallery.results_home
        # Our paths are absolute and already resolved (Sessions resolves its root, and
        # folders and files below it are made by the app): normpath folds any "..".
        return bool(home) and os.path.normpath(path).startswith(home + os.sep)

    async def async_move_resource_to_block_cache(
        self, url_or_file_path: str | Path | None
    ) -> str | None:
        if url_or_file_path is not None and self._is_result(str(url_or_file_path)):
            return str(url_or_file_path)
        return await super().async_move_resource_to_block_cache(url_or_file_path)

    def move_resource_to_block_cache(self, url_or_file_path: str | Path | None) -> str | None:
        if url_or_file_path is not None and self._is_result(str(url_or_file_path)):
            return str(url_or_file_path)
        return super().move_resource_to_block_cache(url_or_file_path)
