"""A warm replica's steps, heard as ``<job>.progress.json`` lands, told as progress.

The replica rewrites the object at most once a second while the request runs
(``oscar_sd/service/warm_progress.py``); each write is an event on the output
folder's shared notification stream, like a result. Each event only wakes
:meth:`StepNews.follow`, which reads the small object and reports the step:
events that come while it reads fold into one read.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable

import anyio

from ._models import ProgressReporter, Stage

logger = logging.getLogger("oscar_sd.oscar")

#: What a warm replica writes beside ``<job>.started.json`` while the request runs.
PROGRESS_SUFFIX = ".progress.json"


class StepNews:
    """The steps of one request, as its progress object tells them."""

    def __init__(self, key: str, report: ProgressReporter,
                 read: Callable[[str], Awaitable[bytes]]) -> None:
        self.key = key
        self._report = report
        self._read = read
        self._news = anyio.Event()
        self.step: tuple[int, int] | None = None

    def landed(self) -> None:
        """The object was (re)written: read it soon (on the request's event loop)."""
        self._news.set()

    async def follow(self) -> None:
        """Read and report each new step until cancelled (when the request's wait ends)."""
        while True:
            await self._news.wait()
            self._news = anyio.Event()
            try:
                told = json.loads(await self._read(self.key))
                step, total = int(told["step"]), int(told["total_steps"])
            except Exception as exc:  # gone already (the result came), or unreadable
                logger.debug("progress object %s not read (%s)", self.key, type(exc).__name__)
                continue
            if self.step is not None and (step, total) <= self.step:
                continue  # an event told twice (a listing after the stream)
            self.step = (step, total)
            self._report(Stage.RUNNING, "Running on the GPU", step=step, total_steps=total)
