"""Warm mode: one long-running replica that keeps the model loaded and consumes the input folder.

``python -m oscar_sd.service --warm`` runs :class:`WarmWorker` with
:class:`~.warm_config.WarmSettings` from the environment. Same objects in,
same objects out as the per-job mode: ``<input>/<job>.json|.txt`` in,
``<output>/<job>.started.json`` (the claim), then ``<job>.zip`` or
``<job>.error.json``. The input is left where it is, as OSCAR leaves it for a
job; the app deletes what it uploaded.

Three threads feed one queue, and the caller's thread runs the model
(the first two are :mod:`.warm_inputs`):

- the listen thread reads MinIO's listen stream on the input folder (every
  ``s3:ObjectCreated:*`` record), reconnecting with backoff;
- the reconcile thread lists the folder on every (re)connect and every
  ``reconcile_interval`` seconds, for inputs whose event never came (MinIO
  drops events for slow readers and while disconnected, and never replays);
- the health endpoint (:mod:`.health`).

Each round takes the oldest queued request and every other queued request of
its shape (size, steps, guidance) up to ``max_batch_images``, claims each
(:mod:`.claims`; a request another replica claimed is dropped), and runs them
in one :func:`~.generate.generate_batch` call. Each result is written as its
call ends. So requests that arrive while the model is busy share the next call.

:meth:`WarmWorker.request_stop` (SIGTERM) stops taking work: the round that
runs finishes and writes its results, claims not yet run are released, and
:meth:`serve` returns. Unclaimed inputs stay for another replica.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .._claim_probe import ClaimProbe
from .._models import GenerationRequest
from .._storage import MinioStorage
from .batch import embeds_guidance, shape_key
from .claim_check import check_claims, claims_health
from .claims import WarmStore
from .generate import RequestOutcome, generate_batch, resolve_request
from .health import HealthServer
from .job import error_report, parse_request, zip_images
from .pipeline import LoadedModel, load_pipeline
from .warm_config import WarmSettings
from .warm_inputs import HearingInputs
from .warm_progress import CallCancelled, CallWatch

logger = logging.getLogger("oscar_sd.service")

#: How many finished jobs a replica remembers, so it does not look at them again.
DONE_MEMORY = 10_000


@dataclass
class Candidate:
    """A request some event or listing told us about."""

    job: str
    key: str
    #: Filled in on first look: the request (resolved), or why it cannot run.
    request: GenerationRequest | None = None
    error: Exception | None = None


@dataclass
class WarmStats:
    """Counters for tests, the benchmark and the health body."""

    #: job -> how many times this replica generated it (1, or a bug).
    generated: dict[str, int] = field(default_factory=dict)
    #: Requests per pipeline call, in order.
    batches: list[int] = field(default_factory=list)
    claims_won: int = 0
    claims_lost: int = 0
    released: int = 0
    connects: int = 0
    reconcile_rounds: int = 0
    #: Seconds inside generate_batch, per round (the benchmark's "pure generation").
    generate_seconds: list[float] = field(default_factory=list)
    #: Calls stopped because every request in them was cancelled.
    cancelled_calls: int = 0


class WarmWorker(HearingInputs):
    """One warm replica. ``serve()`` blocks until :meth:`request_stop`.

    How it hears of inputs (the listen and reconcile threads) is :class:`HearingInputs`.
    """

    def __init__(self, settings: WarmSettings, *,
                 on_result: Callable[[str, str], None] | None = None,
                 generate: Callable[..., Any] = generate_batch) -> None:
        self.settings = settings
        #: What runs a round's requests: :func:`~.generate.generate_batch`, or a test's
        #: stand-in with the same signature (the cluster double's timed generator).
        self._generate = generate
        self.store = WarmStore(settings.endpoint, settings.access_key, settings.secret_key,
                               input_path=settings.input_path, output_path=settings.output_path,
                               region=settings.region, verify=settings.verify)
        self._listen_source = MinioStorage(settings.endpoint, settings.access_key,
                                           settings.secret_key, region=settings.region,
                                           verify=settings.verify, pool_size=2)
        self.stats = WarmStats()
        self.stop_event = threading.Event()
        #: Set once the model is loaded, the health endpoint answers and the
        #: first look at the input folder is done (or failed): /health is 200.
        self.ready = threading.Event()
        self._looked = threading.Event()
        self.health: HealthServer | None = None
        self._on_result = on_result
        self._queue: OrderedDict[str, Candidate] = OrderedDict()
        self._cond = threading.Condition()
        self._reconcile_now = threading.Event()
        self._done: set[str] = set()
        self._done_order: deque[str] = deque()
        self._claimed_not_run: set[str] = set()
        self._listening = False
        self._last_reconcile = 0.0
        self._loaded: LoadedModel | None = None
        self._response: Any = None
        #: What the start-up probe found (None until it ran, or when it could not run).
        self.claim_probe: ClaimProbe | None = None

    # -- life -----------------------------------------------------------------------

    def serve(self) -> None:
        """Load the model, start listening and serving health, run rounds until stopped."""
        settings = self.settings
        self.claim_probe = check_claims(self.store, settings)
        self._loaded = load_pipeline(settings.model, settings.device)
        self.health = HealthServer(self.check_health, settings.host, settings.port,
                                   settings.base_path)
        self.health.start()
        threads = [threading.Thread(target=self._listen, name="warm-listen", daemon=True),
                   threading.Thread(target=self._reconcile, name="warm-reconcile", daemon=True)]
        for thread in threads:
            thread.start()
        self._looked.wait(30)  # bounded: a storage outage shows in /health, not as a hang
        logger.info("Warm replica %s ready: model %s, health on port %d, reading %s/%s",
                    settings.replica, self._loaded.profile.label, self.health.port,
                    settings.input_path.bucket, settings.input_path.folder)
        self.ready.set()
        try:
            while not self.stop_event.is_set():
                self.run_round()
        finally:
            self._release_unstarted()
            self._close_stream()
            self.health.stop()
            for thread in threads:
                thread.join(timeout=10)
            logger.info("Warm replica %s stopped", settings.replica)

    def request_stop(self) -> None:
        """Finish the round that runs, take nothing more, and let :meth:`serve` return."""
        self.stop_event.set()
        self._looked.set()  # a stop during start-up: serve() waits for no first look
        self._reconcile_now.set()
        with self._cond:
            self._cond.notify_all()
        self._close_stream()

    def check_health(self) -> tuple[bool, dict[str, Any]]:
        """Healthy: model loaded, and the stream is open or reconciliation ran lately."""
        recent = time.monotonic() - self._last_reconcile < 3 * self.settings.reconcile_interval + 5
        details = {
            "model": self._loaded.profile.label if self._loaded else None,
            "listening": self._listening,
            "reconciling": recent,
            "queued": len(self._queue),
            "stopping": self.stop_event.is_set(),
            "claims": claims_health(self.claim_probe),
        }
        healthy = (self._loaded is not None and (self._listening or recent)
                   and not self.stop_event.is_set())
        return healthy, details

    # -- the queue --------------------------------------------------------------------

    def offer(self, key: str) -> None:
        """An input object exists at ``key``: queue its request unless known."""
        job = self.store.input_job(key)
        if job is None or self.stop_event.is_set():
            return
        with self._cond:
            if job in self._done or job in self._queue:
                return
            self._queue[job] = Candidate(job, key)
            self._cond.notify()

    def _finished(self, job: str) -> None:
        with self._cond:
            self._queue.pop(job, None)
            if job not in self._done:
                self._done.add(job)
                self._done_order.append(job)
                if len(self._done_order) > DONE_MEMORY:
                    self._done.discard(self._done_order.popleft())

    # -- one round ----------------------------------------------------------------------

    def run_round(self) -> None:
        """Wait for work, claim one shape's worth, generate it, write each result."""
        with self._cond:
            while not self._queue and not self.stop_event.is_set():
                self._cond.wait(timeout=1.0)
            if self.stop_event.is_set():
                return
            waiting = list(self._queue.values())
        chosen = self._choose_and_claim(waiting)
        if self.stop_event.is_set():
            return  # a stop while claiming: serve() releases what was claimed
        if not chosen:
            # What is left could not be read or claimed just now (storage trouble):
            # look again on the next offer, or in a moment, rather than spin.
            with self._cond:
                self._cond.wait(timeout=1.0)
            return
        requests = [candidate.request for candidate in chosen]
        assert all(request is not None for request in requests)
        for candidate in chosen:
            self._claimed_not_run.discard(candidate.job)

        watch = CallWatch(self.store, {candidate.job: candidate.key for candidate in chosen},
                          interval=self.settings.progress_interval)

        def written(index: int, outcome: RequestOutcome) -> None:
            job = chosen[index].job
            if watch.finish(job):
                self._write_outcome(job, outcome)
            else:
                self._finished(job)  # cancelled: nobody waits for its images

        started = time.perf_counter()
        with watch:
            try:
                self._generate(requests, model=self.settings.model,
                               device=self.settings.device,
                               max_images=self.settings.max_batch_images, on_outcome=written,
                               on_step=watch.on_step, interrupt=watch.interrupt)
            except CallCancelled:
                logger.info("Every request of the call was cancelled: it stopped")
                for candidate in chosen:
                    self._finished(candidate.job)
                self.stats.cancelled_calls += 1
        self.stats.generate_seconds.append(time.perf_counter() - started)
        self.stats.batches.append(len(chosen))

    def _choose_and_claim(self, waiting: list[Candidate]) -> list[Candidate]:
        """The oldest request's shape-mates, up to the image cap, each claimed."""
        assert self._loaded is not None
        guidance_input = embeds_guidance(self._loaded)
        chosen: list[Candidate] = []
        shape, images = None, 0
        for candidate in waiting:
            if self.stop_event.is_set():
                break
            if candidate.request is None and candidate.error is None and not self._read(candidate):
                continue
            if candidate.error is not None:
                if self._claim(candidate):
                    self._claimed_not_run.discard(candidate.job)
                    self._write_error(candidate.job, candidate.error)
                continue
            request = candidate.request
            assert request is not None
            this_shape = shape_key(request, guidance_input)
            if shape is None:
                shape = this_shape
            elif this_shape != shape or images + request.num_images > \
                    self.settings.max_batch_images:
                continue
            if self._claim(candidate):
                chosen.append(candidate)
                images += request.num_images
        return chosen

    def _read(self, candidate: Candidate) -> bool:
        """Fetch and resolve the candidate's request; False if its input is gone."""
        assert self._loaded is not None
        try:
            data = self.store.read_input(candidate.key)
        except Exception as exc:
            logger.warning("Could not read %s (%s); will look again", candidate.key,
                           type(exc).__name__)
            return False
        if data is None:
            self._finished(candidate.job)  # taken back by the app: nothing to do
            return False
        try:
            request = parse_request(candidate.key.rsplit("/", 1)[-1], data)
            candidate.request = resolve_request(request, self._loaded.profile)
        except Exception as exc:  # an invalid request still gets its error object
            candidate.error = exc
        return True

    def _claim(self, candidate: Candidate) -> bool:
        try:
            won = self.store.claim(candidate.job, self.settings.replica, self.settings.claim_ttl)
        except Exception as exc:
            logger.warning("Could not claim %s (%s); will try again", candidate.job,
                           type(exc).__name__)
            return False
        if won and not self._still_wanted(candidate):
            won = False
        if not won:
            self.stats.claims_lost += 1
            with self._cond:
                self._queue.pop(candidate.job, None)  # the listing brings it back if it expires
            return False
        self.stats.claims_won += 1
        self._claimed_not_run.add(candidate.job)
        with self._cond:
            self._queue.pop(candidate.job, None)
        return True

    def _still_wanted(self, candidate: Candidate) -> bool:
        """After a claim: is the request's input still there?

        The input was read before the claim; meanwhile another replica may have
        run the request and its client tidied up. The client deletes the input
        before the started marker (one request, in that order), so a claim that
        found no marker and no input is a finished request's: it is given back.
        """
        try:
            if self.store.input_exists(candidate.key):
                return True
        except Exception as exc:  # storage hiccup: run it; a result for nobody is deleted
            logger.warning("Could not check %s (%s)", candidate.job, type(exc).__name__)
            return True
        try:
            self.store.release(candidate.job)
        except Exception as exc:  # it expires after claim_ttl instead
            logger.warning("Could not release %s (%s)", candidate.job, type(exc).__name__)
        logger.info("Request %s was finished meanwhile; gave its claim back", candidate.job)
        return False

    def _release_unstarted(self) -> None:
        for job in sorted(self._claimed_not_run):
            try:
                self.store.release(job)
                self.stats.released += 1
                logger.info("Released the claim on %s for another replica", job)
            except Exception as exc:  # it expires after claim_ttl instead
                logger.warning("Could not release %s (%s)", job, type(exc).__name__)
        self._claimed_not_run.clear()

    # -- results ------------------------------------------------------------------------

    def _write_outcome(self, job: str, outcome: RequestOutcome) -> None:
        self.stats.generated[job] = self.stats.generated.get(job, 0) + 1
        if outcome.error is not None:
            self._write_error(job, outcome.error)
            return
        self._write(job, ".zip", zip_images(outcome.images), "application/zip")

    def _write_error(self, job: str, exc: Exception) -> None:
        self._write(job, ".error.json", error_report(job, exc), "application/json")

    def _write(self, job: str, suffix: str, data: bytes, content_type: str) -> None:
        try:
            self.store.write_result(job, suffix, data, content_type)
        except Exception as exc:
            # The claim expires and another replica runs the request again.
            logger.error("Could not write %s%s (%s)", job, suffix, type(exc).__name__)
            return
        self._finished(job)
        if self._on_result is not None:
            self._on_result(job, suffix)
