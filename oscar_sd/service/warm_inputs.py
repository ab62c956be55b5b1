"""How a warm replica hears of inputs: MinIO's listen stream, and a listing now and then.

The listen thread reads every ``s3:ObjectCreated:*`` record on the input folder,
reconnecting with backoff; the reconcile thread lists the folder on every
(re)connect and every ``reconcile_interval`` seconds, for inputs whose event never
came (MinIO drops events for slow readers and while disconnected, and never
replays). Both hand what they find to :meth:`WarmWorker.offer <.warm.WarmWorker.offer>`.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from .._notify.backoff import Backoff
from .._notify.records import created_keys, lines
from .._notify.source import ListenUnsupported

if TYPE_CHECKING:
    from .._storage import MinioStorage
    from .claims import WarmStore
    from .warm import WarmStats
    from .warm_config import WarmSettings

logger = logging.getLogger("oscar_sd.service")


class HearingInputs:
    """The listen and reconcile threads' bodies, for :class:`~.warm.WarmWorker`.

    It lives on the worker (whose ``__init__`` sets what is named here) and
    shares its stop event, stats and queue.
    """

    settings: WarmSettings
    store: WarmStore
    stats: WarmStats
    stop_event: threading.Event
    _listen_source: MinioStorage
    _response: Any
    _listening: bool
    _reconcile_now: threading.Event
    _looked: threading.Event
    _last_reconcile: float

    def offer(self, key: str) -> None:  # the worker's: queue the input at ``key``
        raise NotImplementedError

    def _finished(self, job: str) -> None:  # the worker's: ``job`` needs nothing more
        raise NotImplementedError

    def _listen(self) -> None:
        backoff, attempt = Backoff(), 0
        path = self.settings.input_path
        while not self.stop_event.is_set():
            try:
                response = self._listen_source.open_listen(path.bucket, path.prefix)
            except ListenUnsupported:
                logger.warning("The storage has no listen API: reconciliation alone finds inputs")
                self.stop_event.wait(300)
                continue
            except Exception as exc:
                logger.warning("Could not open the listen stream (%s)", type(exc).__name__)
                self.stop_event.wait(backoff.delay(attempt))
                attempt += 1
                continue
            self._response, self._listening = response, True
            self.stats.connects += 1
            self._reconcile_now.set()  # what landed while no stream was open
            try:
                for line in lines(response):
                    attempt = 0
                    for key in created_keys(line) or []:
                        self.offer(unquote(key))
                    if self.stop_event.is_set():
                        break
            except Exception as exc:
                if not self.stop_event.is_set():
                    logger.info("The listen stream dropped (%s); reconnecting",
                                type(exc).__name__)
            finally:
                self._listening = False
                self._close_stream()
            self.stop_event.wait(backoff.delay(attempt))
            attempt += 1

    def _close_stream(self) -> None:
        response, self._response = self._response, None
        if response is None:
            return
        for close in ("shutdown", "close", "release_conn"):
            try:
                getattr(response, close)()
            except Exception:  # already closed
                pass

    def _reconcile(self) -> None:
        settings = self.settings
        first = True
        while not self.stop_event.is_set():
            if not first:
                self._reconcile_now.wait(settings.reconcile_interval)
            first = False
            self._reconcile_now.clear()
            if self.stop_event.is_set():
                return
            try:
                listing = self.store.look(settings.max_listed)
            except Exception as exc:
                logger.warning("Could not list the input folder (%s)", type(exc).__name__)
                self._looked.set()
                continue
            self._last_reconcile = time.monotonic()
            self._looked.set()
            self.stats.reconcile_rounds += 1
            for job, key in listing.inputs.items():
                if job in listing.done:
                    self._finished(job)
                    continue
                age = listing.claim_age.get(job)
                if age is not None and age < settings.claim_ttl:
                    continue  # another replica holds it, and not for too long
                self.offer(key)
