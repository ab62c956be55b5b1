"""While a warm replica's call runs: its steps told to the app, its cancelled requests seen.

The app hears a request's objects through the output folder's notifications, so
the steps travel the same way: ``<output>/<job>.progress.json``
``{"step": 12, "total_steps": 25, "at": <time>}``, rewritten at most once a
second per request, by a thread of its own (the model never waits on
storage). The app deletes it with the request's other objects; so does the
replica once the call is over. A request not claimed yet has no replica to tell
its place in line: the replicas share no queue, only the input folder.

The same tick (once a second) looks whether each request's input is still
there: the app deletes the input when its person cancels (or gives up). A
cancelled request gets no result and no more progress; once every request of
the call is cancelled, :meth:`CallWatch.interrupt` stops the call at its next
micro-batch (:mod:`.microbatch`), and the replica moves on to the next round.

>>> with CallWatch(store, {"3f2a": "in/3f2a.json"}) as watch:      # doctest: +SKIP
...     generate_batch(requests, on_step=watch.on_step, interrupt=watch.interrupt)
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Protocol

logger = logging.getLogger("oscar_sd.service")

#: The object a running request's steps are told in (beside ``<job>.started.json``).
PROGRESS_SUFFIX = ".progress.json"
#: At most one progress write a second per request.
PROGRESS_INTERVAL = 1.0


class CallCancelled(Exception):
    """Every request of the running call was cancelled: the call stops."""


class ProgressStore(Protocol):
    """What the watch needs of :class:`~.claims.WarmStore`."""

    def input_exists(self, key: str) -> bool: ...

    def write_result(self, job: str, suffix: str, data: bytes, content_type: str) -> None: ...

    def remove_outputs(self, names: list[str]) -> None: ...


def progress_body(step: int, total: int) -> bytes:
    """The JSON of ``<job>.progress.json``."""
    return json.dumps({"step": step, "total_steps": total, "at": round(time.time(), 3)}).encode()


class CallWatch:
    """Tells the steps of one pipeline call and watches its requests' inputs."""

    def __init__(self, store: ProgressStore, inputs: dict[str, str],
                 interval: float = PROGRESS_INTERVAL) -> None:
        self._store = store
        #: job -> input key, for the requests still wanted and not finished.
        self._active = dict(inputs)
        self._jobs = list(inputs)
        self.cancelled: set[str] = set()
        self._interval = interval
        self._step: tuple[int, int] | None = None
        self._told: tuple[int, int] | None = None
        self._wrote: set[str] = set()
        self._cond = threading.Condition()
        #: Held while a progress object is written: a request that finishes waits, so
        #: that no progress lands after its result.
        self._writing = threading.Lock()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="warm-progress", daemon=True)

    def __enter__(self) -> CallWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        self._thread.join(timeout=30)
        names = [job + PROGRESS_SUFFIX for job in sorted(self._wrote)]
        # A cancelled request's claim goes too: nobody waits for it any more.
        names += [job + ".started.json" for job in sorted(self.cancelled)]
        if names:
            try:
                self._store.remove_outputs(names)
            except Exception as exc:  # the app deletes them with its request anyway
                logger.warning("Could not delete progress objects (%s)", type(exc).__name__)

    # -- the model's thread --------------------------------------------------------------

    def on_step(self, step: int, total: int) -> None:
        """The pipeline's step callback: note the step (the watch's thread tells it; the
        model never waits for storage)."""
        self._step = (step, total)

    def interrupt(self) -> None:
        """Before each micro-batch: stop the call once all its requests are cancelled."""
        if self.cancelled and len(self.cancelled) == len(self._jobs):
            raise CallCancelled

    def finish(self, job: str) -> bool:
        """``job``'s call ended: no more progress for it. False when it was cancelled."""
        with self._writing:
            self._active.pop(job, None)
            return job not in self.cancelled

    # -- the watch's thread --------------------------------------------------------------

    def _run(self) -> None:
        last = float("-inf")
        while True:
            with self._cond:
                if self._stopped:
                    return
                pause = last + self._interval - time.monotonic()
                if pause > 0:
                    self._cond.wait(pause)  # a stop, else the next tick is due
                    continue
                step = self._step
            last = time.monotonic()
            self._look_for_cancels()
            if step is not None and step != self._told:
                self._tell(step)

    def _look_for_cancels(self) -> None:
        for job, key in list(self._active.items()):
            try:
                gone = not self._store.input_exists(key)
            except Exception:  # storage trouble: it runs on; a result for nobody is tidied
                continue
            if gone:
                with self._writing:
                    self._active.pop(job, None)
                    self.cancelled.add(job)
                logger.info("Request %s was cancelled: it gets no result", job)

    def _tell(self, step: tuple[int, int]) -> None:
        body = progress_body(*step)
        for job in list(self._active):
            with self._writing:
                if job not in self._active:  # finished meanwhile: its result is written
                    continue
                try:
                    self._store.write_result(job, PROGRESS_SUFFIX, body, "application/json")
                    self._wrote.add(job)
                except Exception as exc:
                    logger.warning("Could not write %s%s (%s)", job, PROGRESS_SUFFIX,
                                   type(exc).__name__)
        self._told = step
