"""The OSCAR backend: one client for one Stable Diffusion service on one cluster.

>>> async with OscarSD.connect(
...     "https://oscar.example.org", user="alice", password="...",
... ) as sd:
...     result = await sd.generate(GenerationRequest(prompt="a lighthouse at dusk"))

A request is a JSON object uploaded to the service's input folder; OSCAR runs
a job for it; the job writes ``<job>.zip`` (or ``<job>.error.json``) to the
output folder; the shared notification hub hears about it and wakes this
request up. Object keys are the only correlation handle, so each request uses
a fresh unguessable job id.

The job also writes ``<job>.started.json`` when it starts: the request then
moves from "Waiting for a GPU" to "Running on the GPU", and the client's job
watch (``_jobwatch.py``) checks that OSCAR job now and then, for the deaths
that leave no object behind.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, Literal, TypeVar

import anyio
import anyio.to_thread

from ._cluster import OscarCluster
from ._connect import Connecting, open_connection
from ._errors import (
    AuthenticationError,
    ClusterUnreachableError,
    GenerationTimeout,
    JobFailedError,
    OscarSDError,
)
from ._jobwatch import JobStarted, JobWatch
from ._limits import DEFAULT_STORAGE_THREADS, StorageLimits
from ._models import (
    GenerationRequest,
    GenerationResult,
    ProgressCallback,
    ProgressReporter,
    Stage,
    Timings,
    count_of,
)
from ._notify.backoff import Backoff
from ._notify.hub import NotificationHub
from ._notify.orphans import NOTED
from ._notify.waiters import Waiter
from ._notify.waiting import Outage, until_landed, until_ready
from ._steps import PROGRESS_SUFFIX, StepNews
from ._storage import MinioStorage, StoragePath, storage_error
from ._tokens import OidcToken
from ._unpack import unpack_result
from .history import History, HistoryBudget, cluster_history

logger = logging.getLogger("oscar_sd.oscar")

T = TypeVar("T")

#: What a job may write for ``<job>``: our zip, our error report, or the bare
#: PNG of the upstream example service (``<input name>.png``).
RESULT_SUFFIXES = (".zip", ".error.json", ".png", ".txt.png", ".json.png")
#: What the job writes when it starts (oscar_sd/service/marker.py): not a result.
STARTED_SUFFIX = ".started.json"
#: How long a request's own clean-up may take before the hub's background retries take over.
TIDY_LIMIT = 0.5
#: How long the background clean-up waits for an abandoned upload to end before deleting
#: its input anyway (longer than the storage client's connect + read timeouts).
UPLOAD_END_LIMIT = 150.0


class OscarSD:
    """A connected client for one OSCAR service. Create it with :meth:`connect`."""

    def __init__(
        self,
        *,
        cluster: OscarCluster,
        storage: MinioStorage,
        hub: NotificationHub,
        service: str,
        input_path: StoragePath,
        output_path: StoragePath,
        endpoint: str,
        user: str | None,
        token: OidcToken | None,
        timeout: float,
        input_format: Literal["json", "text"],
        results_dir: Path,
        keep_objects: bool,
        outage_timeout: float = 60.0,
        limits: StorageLimits | None = None,
        job_check_interval: float | None = 15.0,
        quota_timeout: float = 600.0,
        hidden: tuple[str, ...] = (),
        uid: str | None = None,
        model: str | None = None,
    ) -> None:
        #: The model the service runs (its OSCAR_SD_MODEL variable), else the service's name:
        #: what a model choice calls it.
        self.model = model or service
        #: Who this client is on the cluster: the OIDC uid, None for the basic-auth account.
        self.uid = uid
        self.outage_timeout = outage_timeout
        #: The library's own worker threads for storage (never anyio's process-wide default).
        self.limits = limits or StorageLimits.create()
        self.service = service
        self.user = user
        #: The bearer token, renewing itself; None with basic auth.
        self.token = token
        self.endpoint = endpoint
        self.input_path = input_path
        self.output_path = output_path
        self.timeout = timeout
        self.input_format = input_format
        self.results_dir = results_dir
        self.keep_objects = keep_objects
        self.description = f"OSCAR service {service!r} at {endpoint}"
        self._cluster = cluster
        self._storage = storage
        self._hub = hub
        if not keep_objects:  # what no request of any process runs for any more goes
            hub.orphans.watch(input_path.bucket, input_path.prefix)
            hub.orphans.watch(output_path.bucket, output_path.prefix)
        self._closed = False
        #: The shared watch of this client's running jobs on OSCAR; None when turned off,
        #: or when the password was not kept (listing jobs would need it).
        watching = job_check_interval is not None and cluster.can_call
        self.job_watch = None if not watching else JobWatch(
            partial(cluster.jobs, service), partial(cluster.job_log, service),
            interval=job_check_interval or 15.0, label=self.description, hidden=hidden,
            quota_timeout=quota_timeout, read_service=partial(cluster.service, service),
        )

    @classmethod
    def connect(
        cls,
        endpoint: str,
        *,
        user: str | None = None,
        password: str | None = None,
        token: str | OidcToken | None = None,
        refresh_token: str | None = None,
        token_endpoint: str | None = None,
        client_id: str | None = None,
        client_secret: str | None = None,
        keep_password: bool = True,
        service: str = "stable-diffusion",
        verify_ssl: bool = True,
        timeout: float = 900.0,
        connect_timeout: float = 15.0,
        input_format: Literal["json", "text"] = "json",
        results_dir: str | Path | None = None,
        keep_objects: bool = False,
        stall_timeout: float = 5.0,
        outage_timeout: float = 60.0,
        backoff: Backoff | None = None,
        storage_threads: int = DEFAULT_STORAGE_THREADS,
        job_check_interval: float | None = 15.0,
        quota_timeout: float = 600.0,
    ) -> Connecting[OscarSD]:
        """Log in to the cluster, find ``service`` and its storage.

        Use it as ``async with OscarSD.connect(...) as sd`` or
        ``sd = await OscarSD.connect(...)`` (then ``await sd.aclose()``).

        Credentials are HTTP basic (``user`` + ``password``: the cluster's one
        admin account) or an OIDC bearer ``token``. With ``refresh_token``,
        ``token_endpoint`` and ``client_id`` (and ``client_secret`` for a
        confidential client) the token is renewed at least 60 s before it
        expires (or pass a ready :class:`OidcToken`); a refused renewal raises
        :class:`SignInExpired`. With a token the user's own MinIO keys are used,
        and a service with ``isolation_level: USER`` is reached through the
        user's private bucket. ``keep_password=False`` drops the password once
        connected (the web app: what needs the cluster's API afterwards asks to
        log in again). ``timeout`` bounds each :meth:`generate` call;
        ``connect_timeout`` bounds each call to the cluster's API, so an
        unreachable endpoint fails fast. ``input_format="text"`` uploads a bare
        ``<job>.txt`` prompt, for services that read only text. Input and
        result objects are deleted once used unless ``keep_objects``. While the
        cluster's storage cannot be reached, waiting requests say so in their
        progress and raise :class:`ClusterUnreachableError` after
        ``outage_timeout`` seconds; ``stall_timeout`` is how long the
        notification stream may stay silent before it is replaced.
        Storage calls run on the client's own worker threads, in two lanes of
        ``storage_threads`` each: one uploads new prompts, the other fetches and
        unpacks finished results, so new requests never hold up finished ones.
        Once a request's job has started, its state on OSCAR is checked every
        ``job_check_interval`` seconds (one listing of the service's jobs a
        round for all of this client's requests; None turns it off): a job that
        ends Failed, or Succeeded without a result, fails its request with
        :class:`JobFailedError` instead of leaving it to its deadline (not
        with ``keep_password=False``: listing the jobs needs the password).
        Before that, the same listings tell a waiting request where jobs wait;
        while OSCAR's Kueue holds them ``Suspended`` (the cluster's quota) the
        stage is :attr:`Stage.QUOTA`, and after ``quota_timeout`` seconds of that
        the request fails with a :class:`JobFailedError` (``QuotaExceeded``) that
        names the quota and how an admin raises it.

        Raises :class:`AuthenticationError`, :class:`ServiceNotFoundError`,
        :class:`ServiceMisconfiguredError` or :class:`ClusterUnreachableError`.
        """
        if input_format not in ("json", "text"):
            raise ValueError("input_format must be 'json' or 'text'")
        if storage_threads < 1:
            raise ValueError("storage_threads must be at least 1")
        if job_check_interval is not None and job_check_interval <= 0:
            raise ValueError("job_check_interval must be a number of seconds above 0, or None")
        bearer = token
        if isinstance(token, str) and refresh_token:
            bearer = OidcToken(
                token,
                refresh_token=refresh_token,
                token_endpoint=token_endpoint,
                client_id=client_id,
                client_secret=client_secret,
                verify_ssl=verify_ssl,
            )

        async def open_client() -> OscarSD:
            opened = await open_connection(
                endpoint,
                user=user,
                password=password,
                token=bearer,
                keep_password=keep_password,
                service=service,
                verify_ssl=verify_ssl,
                connect_timeout=connect_timeout,
                stall_timeout=stall_timeout,
                outage_timeout=outage_timeout,
                backoff=backoff,
                storage_threads=storage_threads,
                results_dir=results_dir,
            )
            return cls(
                cluster=opened.cluster,
                storage=opened.storage,
                hub=opened.hub,
                service=service,
                input_path=opened.input_path,
                output_path=opened.output_path,
                endpoint=opened.cluster.endpoint,
                user=user,
                token=opened.cluster.token,
                timeout=timeout,
                input_format=input_format,
                results_dir=opened.results_dir,
                keep_objects=keep_objects,
                outage_timeout=outage_timeout,
                limits=opened.limits,
                job_check_interval=job_check_interval,
                quota_timeout=quota_timeout,
                hidden=opened.hidden,
                uid=opened.uid,
                model=opened.model,
            )

        return Connecting(open_client())

    async def __aenter__(self) -> OscarSD:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Forget the credentials. The shared notification stream stops by itself when idle;
        storage calls still waiting out an outage (a cancelled request's clean-up) give
        up now rather than hold a thread for the rest of ``outage_timeout``."""
        self._closed = True
        self._storage.gate.close()

    async def generate(
        self,
        request: GenerationRequest | str,
        on_progress: ProgressCallback | None = None,
        *,
        job_id: str | None = None,
        noted: bool = False,
    ) -> GenerationResult:
        """Run ``request`` on the service and return its images.

        ``job_id`` names the request's objects (default: a fresh uuid4 hex); the
        spill-over (``_spill.py``) passes one so that both of its services use it.
        ``noted``: a history waits for this run should this process stop before it
        ends (``oscar_sd/ui/inflight.py``); the input says so, and the orphan sweep
        spares the run's objects for its owner's next visit.

        Raises :class:`JobFailedError` when the service reports a failure,
        :class:`GenerationTimeout` past ``timeout``, :class:`InvalidResultError`
        for a corrupt or hostile result and :class:`ClusterUnreachableError`
        when storage cannot be reached. Cancelling the calling task cleans up:
        the waiter goes, partial files go, and the input object is deleted if
        no result came.
        """
        if self._closed:
            raise AuthenticationError("This session has ended. Log in again.")
        if isinstance(request, str):
            request = GenerationRequest(prompt=request)
        request = request.with_seed()
        job_id = job_id or uuid.uuid4().hex
        deadline = time.monotonic() + self.timeout
        report = ProgressReporter(on_progress)

        input_key, body, content_type = self._input_object(job_id, request)
        result_keys = {self.output_path.key(job_id + suffix) for suffix in RESULT_SUFFIXES}
        marker_key = self.output_path.key(job_id + STARTED_SUFFIX)
        started = JobStarted(report)
        steps = StepNews(self.output_path.key(job_id + PROGRESS_SUFFIX), report,
                         self._read_marker)

        def told(key: str) -> None:
            if key == steps.key:
                steps.landed()
            else:
                started(key)

        waiter = self._hub.register(
            result_keys, self._storage.for_hub, progress_keys=[marker_key, steps.key],
            on_progress=told, repeating_keys=[steps.key],
        )
        landed: str | None = None
        upload: threading.Event | None = None
        directory: Path | None = None
        lanes = self.limits
        try:
            await until_ready(self._hub, waiter, deadline, self._outage(report))
            upload_started = time.monotonic()
            # From here on a job may run: its input must be tidied. A cancelled
            # upload's thread runs on; ``upload`` tells the clean-up when it ended.
            upload = threading.Event()
            await self._storage_call(
                _then_set, upload, self._storage.put,
                self.input_path.bucket, input_key, body, content_type,
                {NOTED: "1"} if noted else None, limiter=lanes.requests,
            )
            uploaded = time.monotonic()
            report(Stage.UPLOADED, "Prompt uploaded to the cluster")
            report(Stage.WAITING, "Waiting for a GPU")

            landed = await self._until_landed(job_id, waiter, started, steps, deadline, report)
            if landed is None:
                # The deadline also takes one last look, but it is never the recovery
                # path for a lost event: reconciliation finds those within seconds.
                landed = await self._last_look(waiter)
            if landed is None:
                raise GenerationTimeout(
                    f"No result from service {self.service!r} after {self.timeout:g} s. "
                    "The cluster may be busy or the job may have failed: try again, or check "
                    "the service's jobs with `oscar-sd status`."
                )
            waited = time.monotonic()

            report(Stage.DOWNLOADING, "Downloading the images")
            data = await self._storage_call(
                self._storage.get, self.output_path.bucket, landed, limiter=lanes.results
            )
            if landed.endswith(".error.json"):
                raise JobFailedError.from_report(data, job_id)
            directory = self.results_dir / job_id
            # Not abandoned on cancel: the clean-up below must not race the writes.
            images = await anyio.to_thread.run_sync(
                unpack_result, landed, data, directory, limiter=lanes.results
            )
            finished = time.monotonic()
            report(Stage.DONE, f"{count_of(len(images), 'image')} ready")
            return GenerationResult(
                images=images,
                request=request,
                job_id=job_id,
                directory=directory,
                timings=Timings(
                    upload=uploaded - upload_started,
                    wait=waited - uploaded,
                    download=finished - waited,
                ),
                model=self.model,
            )
        except BaseException:
            if directory is not None:
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(
                        partial(shutil.rmtree, directory, ignore_errors=True),
                        limiter=lanes.results,
                    )
            raise
        finally:
            if landed is None and upload is not None:
                self._hub.abandon(waiter)  # a result that lands later is deleted then
            else:
                self._hub.discard(waiter)
            if upload is not None:
                with anyio.CancelScope(shield=True):
                    await self._tidy(input_key, landed, upload, [marker_key, steps.key])

    async def _until_landed(
        self, job_id: str, waiter: Waiter, started: JobStarted, steps: StepNews,
        deadline: float, report: ProgressReporter,
    ) -> str | None:
        """The landed result key, or None at the deadline; meanwhile a warm replica's
        steps are told, and while the job runs the job watch follows it and fails
        ``waiter`` when OSCAR says no result will come."""
        failure: Exception | None = None
        landed: str | None = None
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(steps.follow)
            if self.job_watch is not None:
                tasks.start_soon(
                    partial(self.job_watch.follow, job_id, waiter, started, report,
                            read_marker=self._read_marker, look=partial(self._last_look, waiter))
                )
            try:
                landed = await until_landed(waiter, deadline, self._outage(report))
            except Exception as exc:  # raised below, not wrapped in the task group's group
                failure = exc
            tasks.cancel_scope.cancel()
        if failure is not None:
            raise failure
        return landed

    async def _read_marker(self, key: str) -> bytes:
        return await self._storage_call(
            self._storage.get, self.output_path.bucket, key, 64_000, limiter=self.limits.results
        )

    async def _last_look(self, waiter: Waiter) -> str | None:
        down_since = self._storage.gate.down_since
        if down_since is not None:  # a look now would wait out the outage: not a last look
            raise ClusterUnreachableError(
                f"Cannot reach the cluster's storage (MinIO) at {self._storage.endpoint}: it "
                f"has not answered for {time.monotonic() - down_since:.0f} s. "
                "Check that the cluster is up."
            )
        return await self._storage_call(
            self._hub.look_now, waiter, self.limits.requests, run=False
        )

    def _input_object(self, job_id: str, request: GenerationRequest) -> tuple[str, bytes, str]:
        if self.input_format == "text":
            return self.input_path.key(f"{job_id}.txt"), request.prompt.encode(), "text/plain"
        body = json.dumps(request.to_payload()).encode()
        return self.input_path.key(f"{job_id}.json"), body, "application/json"

    def _outage(self, report: ProgressReporter) -> Outage:
        return Outage(self._hub, self._storage.endpoint, self.outage_timeout, report)

    async def _storage_call(
        self, function: Callable[..., T], *args: Any,
        limiter: anyio.CapacityLimiter | None = None, run: bool = True,
    ) -> T:
        """Call storage (in one of ``limiter``'s threads, or ``function`` is itself
        async when not ``run``); every failure becomes an :class:`OscarSDError`."""
        try:
            if run:
                return await anyio.to_thread.run_sync(
                    function, *args, abandon_on_cancel=True, limiter=limiter
                )
            return await function(*args)  # type: ignore[no-any-return]
        except OscarSDError:
            raise
        except Exception as exc:
            raise storage_error(exc, self._storage.endpoint) from None

    async def _tidy(
        self, input_key: str, landed: str | None, upload: threading.Event, markers: list[str]
    ) -> None:
        """Delete the input when no result came (so no job starts late for nobody; a
        warm replica that runs it stops), and the objects once used unless asked to
        keep them: one request where they share a bucket. The job's started marker
        and a warm replica's progress object (``markers``) go with them, whether or
        not their events came (deleting a key that is not there is no error); one
        that lands later for a request that gave up is deleted by the hub.

        Bounded, so that cancelling returns at once even while storage is
        unreachable: what does not finish in time is retried in the background.
        An upload still in flight (cancelled mid-way) could land after a delete,
        so its input is deleted in the background once the upload has ended.
        """
        doomed: dict[str, list[str]] = {}
        if not upload.is_set():
            self._hub.delete_later(self.input_path.bucket, [input_key], after=upload,
                                   after_limit=UPLOAD_END_LIMIT)
        elif landed is None or not self.keep_objects:
            doomed.setdefault(self.input_path.bucket, []).append(input_key)
        if landed is None or not self.keep_objects:
            outputs = doomed.setdefault(self.output_path.bucket, [])
            outputs.extend(markers if landed is None else [landed, *markers])
        lane = self.limits.requests if landed is None else self.limits.results
        for bucket, keys in doomed.items():
            if lane.available_tokens < 1:
                # Busy (a burst): never make a finished request queue for a thread to
                # delete; the hub deletes these with the others, 1,000 keys a request.
                self._hub.delete_later(bucket, keys, soon=True)
                continue
            failed: list[str] = keys
            with anyio.move_on_after(TIDY_LIMIT):
                try:
                    failed = await anyio.to_thread.run_sync(
                        self._storage.remove, bucket, keys, abandon_on_cancel=True,
                        limiter=lane,
                    )
                except Exception:  # tidying is best effort; the result stands
                    failed = keys
            if failed:
                self._hub.delete_later(bucket, failed)

    async def history(self, budget: HistoryBudget | None = None) -> History:
        """This identity's history on the cluster (its own private bucket, made on first
        use): see :mod:`oscar_sd.history`. With basic auth, the one account's."""
        return await cluster_history(self._cluster, self._storage, self.uid, budget)

    @property
    def oidc_groups(self) -> tuple[str, ...]:
        """The groups the cluster admits OIDC users of (its ``/system/config`` ``oidc_groups``)."""
        return self._cluster.oidc_groups

    async def list_jobs(self) -> dict[str, dict[str, Any]]:
        """The service's jobs and their states, as OSCAR reports them (every page)."""
        return await self._cluster.jobs(self.service)


def _then_set(done: threading.Event, function: Callable[..., T], *args: Any) -> T:
    """Call ``function``, then set ``done`` however it ended (even after its caller left)."""
    try:
        return function(*args)
    finally:
        done.set()
