"""Riding out storage outages (MinIO restarts) without a burst of retries.

One gate per storage client, shared by all its threads. While storage is
down, one call at a time probes it, at backoff-spaced moments (capped
exponential, full jitter, counted per outage, not per call); every other call
waits for the gate to open again, and all of them go the moment any call gets
through. A call gives up only once the outage has lasted ``grace`` seconds
(the client's ``outage_timeout``), with the last error, or once the client is
closed: a call abandoned by a cancelled request must not wait out a long grace
in a thread of its own after its client is gone.

Which failures count as an outage is ``_storage_faults.outage_kind``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from ._notify.backoff import Backoff
from ._storage_faults import Outage, outage_kind

logger = logging.getLogger("oscar_sd.storage")

T = TypeVar("T")
#: At most one warning about outages a minute: MinIO restarts whenever anyone deploys.
LOG_EVERY = 60.0


class OutageGate:
    """Thread-safe: the state of one storage client's outage, and its retries."""

    def __init__(self, grace: float = 60.0, backoff: Backoff | None = None) -> None:
        self.grace = grace
        self.backoff = backoff or Backoff(base=0.05, cap=2.0)
        self._cond = threading.Condition()
        self._down_since: float | None = None
        self._attempts = 0  # failed calls in this outage: they space the probes
        self._next_probe = 0.0
        self._probing = False
        self._closed = False
        self._warned_at: float | None = None  # the log says so once a minute, not per restart
        self._unsaid = 0  # outages since then that the log did not mention
        self._said = False  # this outage was logged
        #: Counters for tests and benchmarks.
        self.outages = 0
        self.retries = 0
        self.gave_up = 0

    @property
    def down_since(self) -> float | None:
        return self._down_since

    def close(self) -> None:
        """No more waiting: calls waiting out an outage (and later ones) try once more
        and give up, as past the grace."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def call(self, function: Callable[[], T], *, patient: bool = True,
             done_anyway: Callable[[], bool] | None = None) -> T | None:
        """``function()``, retried through an outage within the grace.

        After a ``cut`` (the request may have been carried out), ``done_anyway()``
        (itself through the gate) says whether it was; then None is returned
        instead of repeating it. Errors that are no outage are raised at once.
        Not ``patient``: tried once, now, whatever the gate's state (for callers
        with a retry schedule of their own); its outcome still counts.
        """
        while True:
            probe = self._wait_turn() if patient else False
            try:
                result = function()
            except Exception as exc:
                kind = outage_kind(exc)
                if kind is None:
                    self._up()  # storage answered: it is up, the call simply failed
                    raise
                if self._down(probe, kind, exc) or not patient:
                    raise
            else:
                self._up()
                return result
            finally:
                if probe:
                    self._end_probe()
            if kind == "cut" and done_anyway is not None and done_anyway():
                return None

    def _wait_turn(self) -> bool:
        """Return at once while storage is up; during an outage, wait for the gate to
        open or for this call's turn to probe. True when this call probes."""
        with self._cond:
            while self._down_since is not None:
                now = time.monotonic()
                if self._closed or now - self._down_since >= self.grace:
                    return False  # past the grace: one last try each, then give up
                if not self._probing and now >= self._next_probe:
                    self._probing = True
                    return True
                wake = self._next_probe if not self._probing else now + self.backoff.cap
                self._cond.wait(max(0.001, min(wake, self._down_since + self.grace) - now))
            return False

    def _down(self, probe: bool, kind: Outage, exc: BaseException) -> bool:
        """Note a failed call; True when the grace is spent (the caller raises).

        Only the outage's first failure and failed probes move the next probe on:
        the many calls that were in flight when storage went down fail together,
        and must not push it further away."""
        with self._cond:
            now = time.monotonic()
            if self._down_since is None:
                self._down_since, self._attempts = now, 0
                self.outages += 1
                self._say_down(now, kind, exc)
                probe = True
            if self._closed or now - self._down_since >= self.grace:
                self.gave_up += 1
                self._cond.notify_all()
                return True
            self.retries += 1
            if probe:
                self._next_probe = now + self.backoff.delay(self._attempts)
                self._attempts += 1
            return False

    def _say_down(self, now: float, kind: Outage, exc: BaseException) -> None:
        self._said = self._warned_at is None or now - self._warned_at >= LOG_EVERY
        if not self._said:
            self._unsaid += 1
            return
        more = f" ({self._unsaid} more short outages in the last minute)" if self._unsaid else ""
        self._warned_at, self._unsaid = now, 0
        logger.warning("the cluster's storage is not answering (%s, %s); retrying for up to "
                       "%g s%s", kind, type(exc).__name__, self.grace, more)

    def _end_probe(self) -> None:
        with self._cond:
            self._probing = False
            self._cond.notify_all()

    def _up(self) -> None:
        if self._down_since is None:  # the usual case: no lock taken
            return
        with self._cond:
            if self._down_since is not None:
                if self._said:
                    logger.info("the cluster's storage answers again after %.1f s",
                                time.monotonic() - self._down_since)
                self._down_since, self._next_probe = None, 0.0
                self._cond.notify_all()
