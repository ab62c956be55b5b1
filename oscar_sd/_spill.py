"""Spill-over: one logical service made of a warm service and a per-job service.

Both run the same image and model. A request goes to the warm replicas
(uploaded to the warm input folder); when they cannot start it within
``spill_after`` seconds (default 10), it runs as an OSCAR job of the per-job
service instead, so a burst uses every GPU node Kubernetes can schedule. Until
a warm replica is ready (the service is stopped or starting, ``_warm_control.py``),
every request goes per-job.

How long a request would wait: the requests of this process in front of it on
the warm service that have not started, times the measured seconds per request
(the mean gap between warm results while requests were waiting: it holds the
batch time, the batch size and the replica count). Every client of the same pair
in one process shares that line (``_spill_line.py``): the page opens one client
per sign-in, and fifty people each alone in a line of their own would never
spill. Requests of other processes (another replica, a command line) are not
seen. Until a gap is measured nothing spills for being late; each
waiting request looks again whenever the queue moves. It spills only when the
per-job path would start it sooner: a job pays a pod start and a model load
(measured on this process's spilled jobs, else the warm service's own last
start, same image and model), behind the spilled jobs not started yet, as many
at a time as have been seen running at once; and no sooner than the oldest of
those has waited.

Exactly once: a request is claimed before it is handed over. The warm replicas
claim ``<warm output>/<job>.started.json`` with ``If-None-Match: *``
(``service/claims.py``); the spill creates that same object the same way, with a
body naming the per-job service (``_claims.py``), which no replica ever takes
over. So of a replica and the spill exactly one wins: if the replica did, the
request stays warm. A won spill deletes the warm input, then writes the request
to the per-job service's input folder (OSCAR starts a job for every object
there), under the same job id; its results come to the per-job output folder,
so the job's own started marker never replaces the claim.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, replace
from functools import partial

import anyio
import anyio.from_thread
import anyio.to_thread

from ._claims import spill_claim
from ._errors import OscarSDError
from ._models import (
    GenerationRequest,
    GenerationResult,
    Progress,
    ProgressCallback,
    Stage,
)
from ._oscar import OscarSD
from ._spill_line import Waiting, shared_queue
from ._warm_control import WarmControl
from .history import History, HistoryBudget

logger = logging.getLogger("oscar_sd.spill")

DEFAULT_SPILL_AFTER = 10.0

WARM, PER_JOB = "warm", "per-job"


@dataclass
class SpillStats:
    """Which path ran how many requests (for tests, the benchmark and the page)."""

    warm: int = 0
    per_job: int = 0
    #: Spilled after waiting on the warm service (the claim won against the replicas).
    spilled_late: int = 0
    #: Claims the replicas won first: the request stayed warm.
    claims_lost: int = 0


class SpillOver:
    """A backend over a warm service and its per-job partner (module docstring)."""

    def __init__(self, warm: OscarSD, per_job: OscarSD, control: WarmControl, *,
                 spill_after: float = DEFAULT_SPILL_AFTER) -> None:
        if spill_after < 0:
            raise ValueError("spill_after must be a number of seconds >= 0")
        self.warm = warm
        self.per_job = per_job
        self.control = control
        control.busy = lambda: self.in_flight > 0
        self.spill_after = spill_after
        self.description = (f"{warm.description}, spilling to per-job service "
                            f"{per_job.service!r}")
        self.stats = SpillStats()
        self.in_flight = 0
        self.queue = shared_queue(warm, per_job)

    # -- the estimate --------------------------------------------------------------------

    @property
    def seconds_per_request(self) -> float | None:
        """Measured: the mean gap between warm results while requests waited."""
        return sum(self.queue.gaps) / len(self.queue.gaps) if self.queue.gaps else None

    def expected_start(self, job: str) -> float | None:
        """Seconds until the warm service starts ``job``; None until measured."""
        gap = self.seconds_per_request
        if gap is None:
            return None
        return self.ahead_of(job) * gap

    def ahead_of(self, job: str) -> int:
        """Requests of this process waiting for the warm replicas in front of ``job``."""
        ahead = 0
        for waiting in self.queue.waiting.values():
            if waiting.job == job:
                break
            if not waiting.started:
                ahead += 1
        return ahead

    def per_job_start(self) -> float:
        """Seconds until a job spilled now would start (0 while nothing is known).

        A start (pod start and model load) each, measured; behind the spilled jobs not
        started yet, as many at a time as this process has seen running at once (the
        GPUs the per-job path has shown it has); and never sooner than the oldest of
        those has already waited. With nothing measured, one job at a time goes (more
        once more were seen running at once).
        """
        queued = len(self.queue.unstarted_jobs)
        if self.queue.job_starts:
            known = sum(self.queue.job_starts) / len(self.queue.job_starts)
        elif self.control.start_seconds:
            known = self.control.start_seconds
        else:
            # Nothing measured yet: probe the per-job path, a few jobs at a time (as many
            # as it has shown it runs at once), rather than send it a whole burst blind.
            return float("inf") if queued >= max(1, self.queue.most_running) else 0.0
        behind = known * (1 + queued // max(1, self.queue.most_running))
        now = time.monotonic()
        waited = max((now - since for since in self.queue.unstarted_jobs.values()), default=0.0)
        return max(behind, waited)

    def _should_spill(self, job: str) -> bool:
        expected = self.expected_start(job)
        return (expected is not None and expected > self.spill_after
                and expected > self.per_job_start())

    def _moved(self) -> None:
        queue = self.queue
        changed, queue.changed = queue.changed, anyio.Event()
        changed.set()

    def _warm_result(self) -> None:
        now = time.monotonic()
        if self.queue.last_result is not None and any(
                not waiting.started for waiting in self.queue.waiting.values()):
            self.queue.gaps.append(now - self.queue.last_result)
        self.queue.last_result = now if self.queue.waiting else None

    # -- generate ------------------------------------------------------------------------

    async def generate(self, request: GenerationRequest | str,
                       on_progress: ProgressCallback | None = None) -> GenerationResult:
        """Run ``request`` on the warm replicas or as a per-job job (module docstring).

        Each :class:`Progress` says which in ``route``; while a request waits for the
        warm replicas, its ``queue_position`` is the requests of this process ahead of it.
        """
        if isinstance(request, str):
            request = GenerationRequest(prompt=request)
        request = request.with_seed()
        job = uuid.uuid4().hex
        started = time.monotonic()
        self.in_flight += 1
        try:
            await self.control.on_demand()
            if not self.control.ready:
                reason = ("the warm service is starting" if self.control.state.state != "stopped"
                          else "the warm service is stopped; starting it")
                return await self._per_job(job, request, on_progress, reason, started)
            return await self._warm_or_spill(job, request, on_progress, started)
        finally:
            self.in_flight -= 1
            self.control.touch()

    async def _warm_or_spill(self, job: str, request: GenerationRequest,
                             on_progress: ProgressCallback | None,
                             started: float) -> GenerationResult:
        waiting = Waiting(job)
        self.queue.waiting[job] = waiting
        spilling = claiming = False
        held: list[Progress] = []  # heard while claiming: told once the claim is lost
        result: GenerationResult | None = None
        failure: BaseException | None = None
        #: The warm service's "waiting" news, told again with the place in line as it moves.
        waiting_news: Progress | None = None
        told_ahead: int | None = None

        def heard(progress: Progress) -> None:
            nonlocal waiting_news, told_ahead
            if spilling:
                return  # our own claim's event, or the cancelled request's last words
            if claiming:
                held.append(progress)
                return
            if progress.stage is Stage.UPLOADED:
                waiting.uploaded = True
                self._moved()
            elif progress.stage is Stage.WAITING:
                waiting_news = progress
                told_ahead = self.ahead_of(job)
                progress = replace(progress, queue_position=told_ahead or None)
            elif progress.stage in (Stage.RUNNING, Stage.GENERATING, Stage.DOWNLOADING):
                if not waiting.started:
                    waiting.started = True
                    self._moved()
            _forward(on_progress, replace(progress, route=WARM))

        def tell_place_in_line() -> None:
            nonlocal told_ahead
            if waiting_news is None or waiting.started or claiming:
                return
            ahead = self.ahead_of(job)
            if ahead != told_ahead:
                told_ahead = ahead
                _forward(on_progress, replace(
                    waiting_news, queue_position=ahead or None, route=WARM,
                    elapsed=time.monotonic() - started))

        async def run_warm() -> None:
            nonlocal result, failure
            try:
                result = await self.warm.generate(request, heard, job_id=job)
            except Exception as exc:  # raised below, not wrapped in the task group's group
                failure = exc
            tasks.cancel_scope.cancel()

        try:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(run_warm)
                while not waiting.started:
                    changed = self.queue.changed
                    tell_place_in_line()
                    if waiting.uploaded and self._should_spill(job):
                        claiming = True
                        # Counted as a per-job job from here, so that the others waiting
                        # decide with it in line (no herd while this claim is under way).
                        self.queue.unstarted_jobs[job] = time.monotonic()
                        try:
                            won: bool | None = await self._claim(job)
                        except OscarSDError as exc:  # storage trouble: it stays warm
                            logger.warning("Could not claim %s for the per-job path (%s)",
                                           job, type(exc).__name__)
                            won = None
                        if won:
                            spilling = True
                            await self._forget_warm_input(job)
                            tasks.cancel_scope.cancel()
                            break
                        claiming = False
                        self.queue.unstarted_jobs.pop(job, None)
                        if won is False:
                            self.stats.claims_lost += 1
                            waiting.started = True  # a replica claimed it first: runs warm
                        for progress in held:
                            heard(progress)
                        held.clear()
                        if won is False:
                            break
                    await changed.wait()
        finally:
            self.queue.waiting.pop(job, None)
            self._moved()
        if spilling:
            self.stats.spilled_late += 1
            reason = (f"the warm replicas could not start it within {self.spill_after:g} s")
            return await self._per_job(job, request, on_progress, reason, started,
                                       claimed=True)
        if failure is not None:
            raise failure
        assert result is not None
        self._warm_result()
        self.stats.warm += 1
        return result

    async def _per_job(self, job: str, request: GenerationRequest,
                       on_progress: ProgressCallback | None, reason: str, started: float, *,
                       claimed: bool = False) -> GenerationResult:
        """Claim ``job`` (unless done), run it on the per-job service, then drop the claim."""
        self.queue.unstarted_jobs.setdefault(job, time.monotonic())
        if not claimed and not await self._claim(job):
            raise RuntimeError(f"request {job} was claimed by another: job ids must be fresh")
        offset = time.monotonic() - started

        def tagged(progress: Progress) -> None:
            if progress.stage is Stage.UPLOADED:
                self.queue.unstarted_jobs.setdefault(job, time.monotonic())
            elif progress.stage is Stage.RUNNING and job in self.queue.unstarted_jobs:
                self.queue.job_starts.append(time.monotonic() - self.queue.unstarted_jobs.pop(job))
                self.queue.running_jobs.add(job)
                self.queue.most_running = max(self.queue.most_running, len(self.queue.running_jobs))
                self._moved()
            _forward(on_progress, replace(progress, route=PER_JOB,
                                          elapsed=progress.elapsed + offset))

        said = f"Waiting for a GPU (a per-job job: {reason})"
        _forward(on_progress, Progress(Stage.WAITING, said, elapsed=offset, route=PER_JOB))
        try:
            result = await self.per_job.generate(request, tagged, job_id=job)
        finally:
            self.queue.unstarted_jobs.pop(job, None)
            self.queue.running_jobs.discard(job)
            with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                await self._drop_claim(job)
        self.stats.per_job += 1
        return result

    # -- the claim -----------------------------------------------------------------------

    async def _claim(self, job: str) -> bool:
        """Create the warm service's claim on ``job`` for the per-job path (exactly one wins)."""
        warm = self.warm
        key = warm.output_path.key(job + ".started.json")
        return await warm._storage_call(
            warm._storage.put_if_absent, warm.output_path.bucket, key,
            spill_claim(self.per_job.service), "application/json",
            limiter=warm.limits.requests)

    async def _forget_warm_input(self, job: str) -> None:
        """The warm input goes before anything else (replicas that listed it find no
        input once a claim is gone: ``WarmWorker._still_wanted``)."""
        warm = self.warm
        name = f"{job}.txt" if warm.input_format == "text" else f"{job}.json"
        try:
            await anyio.to_thread.run_sync(
                partial(warm._storage.remove, warm.input_path.bucket,
                        [warm.input_path.key(name)]), limiter=warm.limits.requests)
        except Exception as exc:  # the claim alone keeps the replicas off it
            logger.warning("Could not delete the warm input of %s (%s)", job,
                           type(exc).__name__)

    async def _drop_claim(self, job: str) -> None:
        warm = self.warm
        try:
            await anyio.to_thread.run_sync(
                partial(warm._storage.remove, warm.output_path.bucket,
                        [warm.output_path.key(job + ".started.json")]),
                limiter=warm.limits.requests)
        except Exception as exc:  # the orphan sweep takes it later
            logger.warning("Could not delete the claim of %s (%s)", job, type(exc).__name__)

    async def history(self, budget: HistoryBudget | None = None) -> History:
        """The identity's history (:meth:`OscarSD.history`), kept beside the warm service."""
        return await self.warm.history(budget)

    @property
    def oidc_groups(self) -> tuple[str, ...]:
        return self.warm.oidc_groups

    def page_opened(self) -> None:
        """Someone opened the page (called from a worker thread of the app): start a
        stopped warm service now, as a sign-in or a request would."""
        try:
            anyio.from_thread.run(self.control.on_demand)
        except RuntimeError:  # not a thread anyio started: the next request starts it
            self.control.last_seen = time.monotonic()
        except OscarSDError as exc:
            logger.warning("Could not look at the warm service (%s)", exc)

    async def aclose(self) -> None:
        await self.warm.aclose()
        await self.per_job.aclose()


def _forward(on_progress: ProgressCallback | None, progress: Progress) -> None:
    if on_progress is None:
        return
    try:
        on_progress(progress)
    except Exception:
        logger.exception("on_progress raised; generation goes on")
