"""Stopping without losing work: on SIGTERM the app finishes the runs it has started.

Kubernetes sends SIGTERM, waits the pod's grace period
(``terminationGracePeriodSeconds``, 30 s by default), then kills it. So on
SIGTERM the app first *drains*: ``/healthz`` answers 503 (the Service stops
sending it new visitors), a new run is refused with a sentence saying why, and
the runs in flight go on to their images (kept in their owners' histories).
Once none is left, or after ``OSCAR_SD_DRAIN_SECONDS`` (25 s, inside the
default grace), the app stops as on Ctrl-C.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

#: What a person who clicks during the drain is told.
DRAINING = "The app is restarting. Try again in a few seconds (your history is kept)."


class Draining(Exception):
    """A new run while the app drains."""


class Drain:
    """Counts the runs in flight; tells when the last one ended after :meth:`begin`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running = 0
        self._idle = threading.Event()
        self._idle.set()
        self.draining = False

    @contextmanager
    def run(self) -> Iterator[None]:
        """Around one run: refused (:class:`Draining`) once the drain has begun."""
        with self._lock:
            if self.draining:
                raise Draining(DRAINING)
            self._running += 1
            self._idle.clear()
        try:
            yield
        finally:
            with self._lock:
                self._running -= 1
                if self._running == 0:
                    self._idle.set()

    @property
    def running(self) -> int:
        return self._running

    def begin(self) -> None:
        with self._lock:
            self.draining = True

    def wait(self, timeout: float) -> bool:
        """Block until no run is in flight (True) or ``timeout`` seconds passed (False)."""
        return self._idle.wait(timeout)
