"""Watching a running request's job on OSCAR: the failures no object reports.

A job killed for memory, evicted, or whose script died before it could write
``<job>.error.json`` leaves nothing in the output folder, so no event ever
comes for it. Once a request's job has said where it is (its started marker,
``<job>.started.json``, names the OSCAR job), the client checks that job's
state on OSCAR at a slow rate (``job_check_interval``, 15 s by default):

* one :class:`JobWatch` per client: each *round* lists the service's jobs once
  (every page of ``GET /system/logs/{svc}``), however many requests run. The
  rounds are driven by the requests that wait on them (the first one due
  lists, the others read its answer), so the watch has no task of its own and
  lists nothing while none of the client's jobs runs;
* a job that ended Failed fails its request with :class:`JobFailedError`
  naming what OSCAR reports and a line of the job's log (``GET
  /system/logs/{svc}/{job}``; OSCAR's JobInfo carries only the status and
  times, grycap/oscar ``pkg/types/jobinfo.go``), with anything that looks like
  a key taken out;
* a job that ended Succeeded without a result: after ``grace`` seconds (its
  result's event may be on its way) one last look at the folder, then
  :class:`JobFailedError`;
* a job OSCAR listed before and no longer lists for ``GONE_ROUNDS`` rounds was
  deleted: said so. A name OSCAR never listed (a warm worker's own name) is
  never judged;
* a listing that fails (cluster API down, a password not kept) is logged once
  and changes nothing: requests keep waiting for their results.

Before its marker, a waiting request takes part in the same rounds and reads
from them where jobs wait: "Waiting for a GPU (3 jobs queued)" for Pending
jobs, "Waiting for the cluster's quota (1 job suspended)" for jobs OSCAR's
Kueue holds ``Suspended`` (:mod:`._quota`). A request whose listings have shown
suspended jobs, and no Pending one, for ``quota_timeout`` seconds (600 by
default) fails with an error that names the quota and how an admin raises it:
such a job may never run. (No job id comes back from an upload, so a request
cannot tell its own job from the others before its marker; under OIDC a user's
listing holds only their own jobs.)
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import anyio

from ._errors import JobFailedError
from ._models import ProgressReporter, Stage
from ._notify.waiters import Waiter
from ._quota import SUSPENDED, WAITING_FOR_QUOTA, quota_message

logger = logging.getLogger("oscar_sd.jobs")

#: OSCAR's job states (the phase of the job's pod, grycap/oscar ``pkg/handlers/logs.go``).
PENDING, FAILED, SUCCEEDED = "Pending", "Failed", "Succeeded"
#: How many rounds in a row a job OSCAR listed before may be missing before it counts as deleted.
GONE_ROUNDS = 3
#: Who failed a request whose job ended without a result (``Waiter.failed_by``).
FAILED_BY = "job-watch"

JobList = Callable[[], Awaitable[dict[str, Any]]]
JobLog = Callable[[str], Awaitable[str | None]]


@dataclass(frozen=True)
class Round:
    """One listing of the service's jobs: when it ended, and the jobs (None if it failed)."""

    at: float
    jobs: dict[str, Any] | None

    @property
    def queued(self) -> int:
        return self._count(PENDING)

    @property
    def suspended(self) -> int:
        return self._count(SUSPENDED)

    def _count(self, status: str) -> int:
        return sum(1 for info in (self.jobs or {}).values()
                   if isinstance(info, dict) and info.get("status") == status)


@dataclass
class WatchStats:
    """What the watch did, for tests and the log."""

    rounds: int = 0
    list_failures: int = 0
    #: Requests failed because their job ended Failed / Succeeded without a result / was deleted.
    failed: int = 0
    no_result: int = 0
    gone: int = 0
    #: Requests whose result the last look found after all.
    found_late: int = 0
    #: Requests failed because their job stayed Suspended (the quota) too long.
    quota: int = 0


class JobStarted:
    """A request's ``on_progress`` for its started marker: says "Running on the GPU"."""

    def __init__(self, report: ProgressReporter) -> None:
        self.key: str | None = None
        self.event = anyio.Event()
        self._report = report

    def __call__(self, key: str) -> None:
        self.key = key
        self._report(Stage.RUNNING, "Running on the GPU")
        self.event.set()


@dataclass
class JobWatch:
    """The shared job watch of one client and service (module docstring)."""

    list_jobs: JobList
    read_log: JobLog
    interval: float = 15.0
    grace: float = 5.0
    label: str = "OSCAR"
    #: Seconds a waiting request may see only Suspended jobs before it fails.
    quota_timeout: float = 600.0
    #: The service's definition, for the quota's error (its owner and requests).
    read_service: Callable[[], Awaitable[dict[str, Any] | None]] | None = None
    #: Exact strings never to repeat from a job's log (the client's storage keys).
    hidden: tuple[str, ...] = field(default=(), repr=False)
    stats: WatchStats = field(default_factory=WatchStats)

    def __post_init__(self) -> None:
        self._lock = anyio.Lock()
        self._latest: Round | None = None
        self._round_done = anyio.Event()
        self._in_trouble = False

    async def follow(
        self,
        job_id: str,
        waiter: Waiter,
        started: JobStarted,
        report: ProgressReporter,
        read_marker: Callable[[str], Awaitable[bytes]],
        look: Callable[[], Awaitable[str | None]],
    ) -> None:
        """Watch one request until its job ends; fail ``waiter`` if no result will come.

        Runs beside the request's wait and is cancelled when the wait ends. It
        never raises: watching is a help, and its own trouble must not fail a
        request that may still get its result.
        """
        try:
            if not await self._until_started(job_id, waiter, started, report):
                return  # failed for the quota
            assert started.key is not None
            name = _job_name(await read_marker(started.key))
            if not name:
                return  # no OSCAR job to watch (a local run, an old worker)
            status = await self._until_ended(name)
            error = await self._verdict(job_id, name, status, waiter, look)
            if error is not None:
                waiter.fail(error, FAILED_BY)
        except Exception as exc:
            logger.warning("%s: could not watch the job of request %s (%s)",
                           self.label, job_id, type(exc).__name__)

    # -- one request ---------------------------------------------------------------

    async def _until_started(
        self, job_id: str, waiter: Waiter, started: JobStarted, report: ProgressReporter,
    ) -> bool:
        """Wait for the marker, saying where jobs wait; False once the quota failed it."""
        await self._watch_queue(job_id, waiter, started, report)
        return started.event.is_set()

    async def _watch_queue(
        self, job_id: str, waiter: Waiter, started: JobStarted, report: ProgressReporter,
    ) -> None:
        """Round after round until the marker or the quota's timeout.

        The marker ends the wait between rounds, never inside one: a round cancelled
        mid-listing had its listing reach OSCAR and thrown away, and the next round
        (``_until_ended``'s, which waits for the same lock anyway) listed again."""
        told, suspended_since = "", None
        while not started.event.is_set():
            this_round = await self._round()
            queued, suspended = this_round.queued, this_round.suspended
            if started.event.is_set():
                return
            stage, message = Stage.WAITING, ""
            if suspended:
                suspended_since = suspended_since or this_round.at
                waited = this_round.at - suspended_since
                if not queued and waited >= self.quota_timeout:
                    self.stats.quota += 1
                    definition = await self._definition()
                    waiter.fail(JobFailedError(quota_message(definition, waited), job_id,
                                               "QuotaExceeded"), FAILED_BY)
                    return
                stage, message = Stage.QUOTA, f"{WAITING_FOR_QUOTA} ({_jobs(suspended)} suspended)"
            else:
                suspended_since = None
                if queued:
                    message = f"Waiting for a GPU ({_jobs(queued)} queued)"
                elif told:
                    message = "Waiting for a GPU"
            if message:  # again each round: an outage's words may have replaced it
                told = message
                report(stage, message)
            with anyio.move_on_after(max(0.0, this_round.at + self.interval - time.monotonic())):
                await started.event.wait()

    async def _definition(self) -> dict[str, Any] | None:
        if self.read_service is None:
            return None
        try:
            return await self.read_service()
        except Exception as exc:  # the error is still said, without the numbers
            logger.info("%s: could not read the service (%s)", self.label, type(exc).__name__)
            return None

    async def _until_ended(self, name: str) -> str:
        """The job's final state, or "Gone" once OSCAR stopped listing a job it listed."""
        seen, missing = False, 0
        while True:
            this_round = await self._round()
            if this_round.jobs is not None:
                info = this_round.jobs.get(name)
                if isinstance(info, dict):
                    seen, missing = True, 0
                    status = str(info.get("status", ""))
                    if status in (FAILED, SUCCEEDED):
                        return status
                elif seen:
                    missing += 1
                    if missing >= GONE_ROUNDS:
                        return "Gone"
            # The watch's check rate: every follower wakes for the same next round.
            await anyio.sleep(max(0.0, this_round.at + self.interval - time.monotonic()))

    async def _verdict(
        self, job_id: str, name: str, status: str, waiter: Waiter,
        look: Callable[[], Awaitable[str | None]],
    ) -> JobFailedError | None:
        """What a job that ended means for its request: None if its result came after all."""
        if status == SUCCEEDED:
            # faas-supervisor uploads before the pod ends: the result's event may be on its way.
            with anyio.move_on_after(self.grace):
                await waiter.wait()
        if waiter.resolved:
            return None
        found = await look()  # a last look at the folder, for a result whose event was lost
        if found is not None:
            self.stats.found_late += 1
            waiter.resolve(found, FAILED_BY)
            return None
        if status == "Gone":
            self.stats.gone += 1
            return JobFailedError(
                f"The job failed: OSCAR no longer lists job {name}: it was deleted before it "
                "wrote a result. Try again.", job_id, "JobDeleted")
        line = await self._log_line(name)
        detail = f"; its log ends with: {line}" if line else ""
        if status == FAILED:
            self.stats.failed += 1
            return JobFailedError(
                f"The job failed: OSCAR reports job {name} as Failed{detail}. The pod was "
                "probably killed (out of memory, or evicted): try again, or give the service "
                "more memory.", job_id, "JobFailed")
        self.stats.no_result += 1
        return JobFailedError(
            f"The job failed: OSCAR reports job {name} as Succeeded, but it wrote no "
            f"result{detail}. The service's script may not report its failures: check the "
            "job's log (`oscar-sd status`).", job_id, "NoResult")

    async def _log_line(self, name: str) -> str:
        try:
            log = await self.read_log(name)
        except Exception as exc:  # the status alone still says what happened
            logger.info("%s: could not read the log of job %s (%s)", self.label, name,
                        type(exc).__name__)
            return ""
        return useful_line(log or "", self.hidden)

    # -- the shared rounds ------------------------------------------------------------

    async def _round(self) -> Round:
        """This round's listing: made by the first follower due, read by the others."""
        async with self._lock:
            latest = self._latest
            if latest is not None and time.monotonic() < latest.at + self.interval:
                return latest
            jobs: dict[str, Any] | None
            try:
                jobs = await self.list_jobs()
            except Exception as exc:
                jobs = None
                self._note_trouble(exc)
            else:
                self._note_ok()
            self.stats.rounds += 1
            self._latest = Round(time.monotonic(), jobs)
            done, self._round_done = self._round_done, anyio.Event()
            done.set()
            return self._latest

    async def next_round(self) -> Round:
        """Wait for the next round a follower makes (none is made on this one's account)."""
        await self._round_done.wait()
        assert self._latest is not None
        return self._latest

    def _note_trouble(self, exc: Exception) -> None:
        self.stats.list_failures += 1
        if not self._in_trouble:  # once per outage: it may last
            self._in_trouble = True
            # The type only: messages of HTTP libraries can carry URLs and headers.
            logger.warning("%s: could not list the service's jobs (%s); running requests "
                           "keep waiting for their results", self.label, type(exc).__name__)

    def _note_ok(self) -> None:
        if self._in_trouble:
            self._in_trouble = False
            logger.info("%s: the service's jobs can be listed again", self.label)


def _jobs(count: int) -> str:
    return f"{count} job{'s' if count != 1 else ''}"


def _job_name(marker: bytes) -> str:
    """The OSCAR job name a started marker carries (``{"job": $JOB_UUID, ...}``)."""
    try:
        body = json.loads(marker[:10_000])
    except ValueError:
        return ""
    name = body.get("job") if isinstance(body, dict) else None
    return name.strip() if isinstance(name, str) else ""


#: Words that make a log line worth showing, best last (the most telling line wins).
_TELLING = re.compile(r"oomkilled|out of memory|killed|evicted|signal|error|exception|fail",
                      re.IGNORECASE)
_SECRET_FIELD = re.compile(
    r"(?i)\b([\w.-]*(?:secret|password|passwd|token|credential|access[_-]?key|api[_-]?key)"
    r"[\w.-]*)(\"?\s*[=:]\s*)\S+")
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+\S+")
_URL_USER = re.compile(r"//[^/\s@]+@")
#: Long runs of key-like characters (base64 or hex/dashed ids) with digits in them.
_KEY_LIKE = (re.compile(r"[A-Za-z0-9+/=]{24,}"), re.compile(r"[A-Za-z0-9_\-]{24,}"))
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]|\x1b\[[0-9;]*[A-Za-z]")
LINE_LIMIT = 160


def _hide_if_key_like(match: re.Match[str]) -> str:
    run = match.group(0)
    looks_random = any(c.isdigit() for c in run) and any(c.isalpha() for c in run)
    return "[hidden]" if looks_random else run


def useful_line(log: str, hidden: Iterable[str] = ()) -> str:
    """One short line of a job's log worth showing a person, with nothing that looks like a
    key: the last line that tells of a failure among the last 50, else the last line."""
    lines = [line.strip() for line in _CONTROL.sub("", log).splitlines() if line.strip()][-50:]
    if not lines:
        return ""
    line = next((line for line in reversed(lines) if _TELLING.search(line)), lines[-1])
    for secret in hidden:
        if secret:
            line = line.replace(secret, "[hidden]")
    line = _SECRET_FIELD.sub(r"\1\2[hidden]", line)
    line = _BEARER.sub(r"\1 [hidden]", line)
    line = _URL_USER.sub("//[hidden]@", line)
    for pattern in _KEY_LIKE:
        line = pattern.sub(_hide_if_key_like, line)
    return line if len(line) <= LINE_LIMIT else line[:LINE_LIMIT - 1] + "…"
