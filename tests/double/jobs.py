"""Running a service for an upload, the way OSCAR and faas-supervisor do.

An object created under a service's input path becomes a job (Pending ->
Running -> Succeeded/Failed).  The job downloads the object to
``<tmp>/input/<basename of key>``, runs the handler with ``<tmp>/output/``,
then uploads every file there to ``<output bucket>/<output folder>/<relative
path>`` through the storage's own write path, so the outputs fire events
exactly like a client PUT.  Delays go through one timer thread, the work
through a thread pool, so a thousand jobs in flight cost no thousand threads.

What the script does never changes the job's state: faas-supervisor
(grycap/faas-supervisor ``faassupervisor/faas/binary/supervisor.py``,
``BinarySupervisor.execute_function``) starts the script with ``Popen``, reads
its output into the log and never looks at its exit code, then uploads
whatever is in ``$TMP_OUTPUT_DIR``.  So a script that fails, or a handler that
raises, still ends Succeeded with its outputs uploaded; only a killed pod
(``kill_next``: out of memory, evicted) ends Failed, with nothing uploaded.
OSCAR lists a job's status as its pod's phase (grycap/oscar
``pkg/handlers/logs.go``, ``MakeJobsInfoHandler``: ``pod.Status.Phase``), and a
pod whose container was killed ends in phase Failed.
``kill_next_after_start`` kills the pod once its handler ran (after a
started marker it wrote straight to storage) and before the upload;
``next_leaves_nothing`` ends a job Succeeded with nothing to upload (a script
that failed without reporting it).

Each handler sees its pod's environment (``JOB_UUID``, ``EVENT``, the MinIO
keys of the uploader) through ``pod.current_job()``; ``ScriptHandler`` passes
``JOB_UUID`` and ``EVENT`` to its script.

With a capacity model (capacity.py) a job's pod is Pending until the GPU pool
gives it a GPU (services with ``enable_gpu``) and through its pod start; then
Running through the model load, the handler and the generation's duration.
"""

from __future__ import annotations

import base64
import heapq
import itertools
import json
import os
import random
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from . import pod
from .capacity import Capacity, Lease
from .events import ObjectEvent, build_record
from .kueue import Kueue, Resources
from .s3 import S3Front
from .services import job_id, write_error

# A handler may return text for the job log (a script's output does).
Handler = Callable[[Path, Path], "str | None"]

PENDING, RUNNING, SUCCEEDED, FAILED = "Pending", "Running", "Succeeded", "Failed"
#: A job Kueue has not admitted: it has no pod yet (pkg/handlers/logs.go), see kueue.py.
SUSPENDED = "Suspended"

# Job temp dirs live in RAM where we can: on this kind of VM a directory made,
# written and removed on disk costs ~10 ms, in /dev/shm ~0.2 ms (1,000 jobs in flight).
JOB_TMP_DIR = os.environ.get("OSCAR_DOUBLE_TMP") or (
    "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None)


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _rfc3339(moment: datetime | None) -> str | None:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment else None


class ScriptHandler:
    """Run a shell script under OSCAR's job contract; its output is the job log.

    The script sees ``INPUT_FILE_PATH``, ``TMP_INPUT_DIR`` and ``TMP_OUTPUT_DIR``,
    and OSCAR's ``JOB_UUID`` and ``EVENT`` (over ``env``), as inside a real OSCAR job.
    Its exit code is not checked, as faas-supervisor does not check it (module docstring).
    """

    def __init__(self, script: str | os.PathLike[str], env: Mapping[str, str] | None = None,
                 timeout: float = 120.0) -> None:
        self.script = Path(script)
        self.env = dict(env or {})
        self.timeout = timeout

    def __call__(self, input_file: Path, output_dir: Path) -> str:
        job = pod.current_job()
        env = {
            **os.environ, **self.env, **(job.env if job else {}),
            "INPUT_FILE_PATH": str(input_file),
            "TMP_INPUT_DIR": str(input_file.parent),
            "TMP_OUTPUT_DIR": str(output_dir),
        }
        done = subprocess.run(
            ["/bin/sh", str(self.script)], env=env, cwd=output_dir.parent,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=self.timeout, check=False)
        return done.stdout.decode("utf-8", "replace")


@dataclass
class StoragePath:
    """One ``input[]``/``output[]`` entry: ``<bucket>/<folder>`` plus name filters."""

    bucket: str
    folder: str
    prefixes: list[str] = field(default_factory=list)
    suffixes: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, entry: Mapping[str, Any]) -> StoragePath:
        bucket, _, folder = str(entry["path"]).strip("/").partition("/")
        return cls(bucket, folder.strip("/"), list(entry.get("prefix") or []),
                   list(entry.get("suffix") or []))

    def key_for(self, relative: str) -> str:
        return f"{self.folder}/{relative}" if self.folder else relative

    def holds(self, key: str) -> bool:
        """Whether ``key`` is an object under this path's folder. For an *input* path
        this is the whole test: OSCAR's webhook filter is the folder prefix alone
        (grycap/oscar ``pkg/utils/minio.go`` ``enableInputNotification`` adds one
        ``FilterRuleNamePrefix`` rule), so ``prefix``/``suffix`` of an input filter
        nothing and every object created under the folder starts a job."""
        base = f"{self.folder}/" if self.folder else ""
        return key.startswith(base) and key != base

    def relative(self, key: str) -> str | None:
        """The name below the folder if ``key`` passes this path's filters, else None.
        For an *output* path, as faas-supervisor filters the files it uploads by the
        output's prefixes and suffixes (``faassupervisor/storage/config.py``
        ``upload_input``)."""
        base = f"{self.folder}/" if self.folder else ""
        if not key.startswith(base) or key == base:
            return None
        rest = key[len(base):]
        if self.prefixes and not any(rest.startswith(p) for p in self.prefixes):
            return None
        if self.suffixes and not any(key.endswith(s) for s in self.suffixes):
            return None
        return rest


@dataclass
class DeployedService:
    """A service as the runner sees it: its OSCAR definition, handler and job delay."""

    definition: dict[str, Any]
    handler: Handler
    job_delay: float = 0.0
    #: With a larger maximum, each job waits a random time in [job_delay, job_delay_max].
    job_delay_max: float = 0.0

    def delay(self) -> float:
        if self.job_delay_max > self.job_delay:
            return random.uniform(self.job_delay, self.job_delay_max)
        return self.job_delay

    @property
    def name(self) -> str:
        return str(self.definition["name"])

    @property
    def inputs(self) -> list[StoragePath]:
        return [StoragePath.parse(e) for e in self.definition.get("input") or []]

    @property
    def outputs(self) -> list[StoragePath]:
        return [StoragePath.parse(e) for e in self.definition.get("output") or []]

    @property
    def private_buckets(self) -> list[str]:
        """``isolation_level: USER``: each allowed user's bucket, which triggers the service too."""
        return list(self.definition.get("bucket_list") or [])

    def outputs_for(self, input_bucket: str | None) -> list[StoragePath]:
        """Where a job's files go: a job from a private bucket writes to that bucket's
        output folder (grycap/oscar docs/multitenancy.md; grycap/faas-supervisor
        ``faassupervisor/storage/config.py`` ``upload_output``: under ``isolation_level:
        USER``, an event bucket in ``bucket_list`` replaces the output path's bucket),
        others to the output paths."""
        if input_bucket in self.private_buckets:
            return [StoragePath(input_bucket, path.folder, path.prefixes, path.suffixes)
                    for path in self.outputs]
        return self.outputs


@dataclass(eq=False)
class Job:
    name: str
    service: str
    input_name: str  # basename of the input file
    bucket: str | None = None
    key: str | None = None
    data: bytes | None = None  # body of POST /job/{svc}
    #: ``$EVENT``: MinIO's webhook event for an upload, else the body of POST /job/{svc}.
    event: str = ""
    status: str = PENDING
    creation_time: datetime = field(default_factory=_now)
    start_time: datetime | None = None
    finish_time: datetime | None = None
    log: str = ""
    done: threading.Event = field(default_factory=threading.Event)

    def info(self) -> dict[str, str]:
        """A JobInfo of OSCAR's API (absent times are left out, not null)."""
        if self.status == SUSPENDED:  # logs.go: no pod, so only the status
            return {"status": SUSPENDED}
        times = {"creation_time": self.creation_time, "start_time": self.start_time,
                 "finish_time": self.finish_time}
        return {"status": self.status,
                **{k: v for k, v in ((k, _rfc3339(t)) for k, t in times.items()) if v}}


class JobRunner:
    """Turns uploads into jobs and runs them."""

    def __init__(self, storage: S3Front, max_workers: int = 32,
                 capacity: Capacity | None = None) -> None:
        self.storage = storage
        self.capacity = capacity
        #: Quotas that admit the suspended jobs of non-admin services (kueue.py).
        self.kueue = Kueue()
        self._stopped = threading.Event()  # ends capacity waits at stop()
        self.services: dict[str, DeployedService] = {}
        self._jobs: dict[str, dict[str, Job]] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="double-job")
        self._timers: list[tuple[float, int, Job]] = []
        self._timer_cond = threading.Condition(self._lock)
        self._tie = itertools.count()
        self._held = False
        self._held_jobs: list[Job] = []
        self._failures: deque[str] = deque()
        self._kills = 0
        self._kills_after_start = 0
        self._leave_nothing = 0
        self._stopping = False
        self._timer_thread = threading.Thread(target=self._timer_loop, name="double-job-timer",
                                              daemon=True)
        self._timer_thread.start()
        storage.add_write_listener(self.on_writes)

    # -- switches -----------------------------------------------------------------

    def hold(self) -> None:
        with self._lock:
            self._held = True

    def release(self) -> None:
        with self._lock:
            self._held = False
            jobs, self._held_jobs = self._held_jobs, []
        for job in jobs:
            self._pool.submit(self._run, job)

    def fail_next(self, message: str) -> None:
        with self._lock:
            self._failures.append(message)

    def kill_next(self) -> None:
        with self._lock:
            self._kills += 1

    def kill_next_after_start(self) -> None:
        with self._lock:
            self._kills_after_start += 1

    def next_leaves_nothing(self) -> None:
        with self._lock:
            self._leave_nothing += 1

    # -- jobs of a service (for /system/logs) -----------------------------------------

    def jobs(self, service: str) -> dict[str, Job]:
        with self._lock:
            return dict(self._jobs.get(service, {}))

    def all_jobs(self) -> list[Job]:
        with self._lock:
            return [job for jobs in self._jobs.values() for job in jobs.values()]

    def delete_job(self, service: str, name: str) -> bool:
        with self._lock:
            deleted = self._jobs.get(service, {}).pop(name, None) is not None
        self.kueue.finished(name)
        return deleted

    def delete_jobs(self, service: str, everything: bool) -> None:
        with self._lock:
            jobs = self._jobs.get(service, {})
            for name in [n for n, j in jobs.items() if everything or j.status == SUCCEEDED]:
                del jobs[name]

    # -- creating jobs --------------------------------------------------------------

    def on_writes(self, events: list[ObjectEvent]) -> None:
        """Storage callback: every created object under an input path starts a job."""
        for event in events:
            if not event.created:
                continue
            for service in list(self.services.values()):
                for path in service.inputs:
                    buckets = {path.bucket, *service.private_buckets}
                    if event.bucket in buckets and path.holds(event.key):
                        self.submit(service, bucket=event.bucket, key=event.key, event=event)
                        break

    def submit(self, service: DeployedService, *, bucket: str | None = None,
               key: str | None = None, data: bytes | None = None,
               input_name: str | None = None, event: ObjectEvent | None = None) -> Job:
        name = f"{service.name}-{secrets.token_hex(4)}"
        job = Job(name=name, service=service.name,
                  input_name=input_name or os.path.basename(key or name),
                  bucket=bucket, key=key, data=data,
                  event=self._webhook_body(event) if event else (data or b"").decode(
                      "utf-8", "replace"))
        suspended = self.kueue.suspends(service.definition)
        with self._lock:
            self._jobs.setdefault(service.name, {})[name] = job
            if suspended:
                job.status = SUSPENDED
        if suspended:
            owner = str(service.definition.get("owner"))
            self.kueue.enqueue(name, owner, Resources.of_service(service.definition),
                               lambda: self._start(job, service))
        else:
            self._start(job, service)
        return job

    def _start(self, job: Job, service: DeployedService) -> None:
        """Create the job's pod: Pending, after the service's job delay if it has one."""
        with self._lock:
            job.status = PENDING
            delay = service.delay()
            if delay > 0:
                when = time.monotonic() + delay
                heapq.heappush(self._timers, (when, next(self._tie), job))
                self._timer_cond.notify()
                return
        self._pool.submit(self._run, job)

    def _webhook_body(self, event: ObjectEvent) -> str:
        """What MinIO's webhook target posts to OSCAR: ``{EventName, Key, Records}``."""
        record = build_record(event, escape=False, endpoint=self.storage.hub.endpoint)
        return json.dumps({"EventName": event.name, "Key": f"{event.bucket}/{event.key}",
                           "Records": [record]})

    def _pod(self, job: Job, service: DeployedService, workdir: Path) -> pod.JobContext:
        # OSCAR mounts the uploader's keys; the double records no uploader (every
        # event's principal is the cluster's key), so a pod gets the cluster's keys.
        providers = workdir / "providers" / "minio.default"
        providers.mkdir(parents=True)
        (providers / "accessKey").write_text(self.storage.access_key)
        (providers / "secretKey").write_text(self.storage.secret_key)
        definition = {**service.definition, "storage_providers": {"minio": {"default": {
            "endpoint": self.storage.hub.endpoint, "verify": False, "region": "us-east-1"}}}}
        return pod.JobContext(
            name=job.name, event=job.event, minio_endpoint=self.storage.hub.endpoint,
            outputs=tuple((path.bucket, path.folder) for path in service.outputs_for(job.bucket)),
            access_key=self.storage.access_key, secret_key=self.storage.secret_key,
            providers_dir=str(providers),
            function_config=base64.b64encode(yaml.safe_dump(definition).encode()).decode())

    def _timer_loop(self) -> None:
        with self._lock:
            while not self._stopping:
                if not self._timers:
                    self._timer_cond.wait()
                    continue
                wait = self._timers[0][0] - time.monotonic()
                if wait > 0:
                    self._timer_cond.wait(wait)
                    continue
                _, _, job = heapq.heappop(self._timers)
                self._pool.submit(self._run, job)

    # -- running one job ------------------------------------------------------------

    def _run(self, job: Job) -> None:
        with self._lock:
            if self._stopping:
                return
            if self._held:
                self._held_jobs.append(job)  # stays Pending until release()
                return
        lease = self._schedule(job)
        try:
            self._run_pod(job)
        finally:
            if lease is not None and self.capacity is not None:
                self.capacity.pool.release(lease)
            self.kueue.finished(job.name)  # its quota goes to the next suspended job

    def _schedule(self, job: Job) -> Lease | None:
        """The pod's GPU (when its service asks for one) and its start; the job stays
        Pending meanwhile, as Kubernetes leaves an unscheduled or starting pod."""
        service = self.services.get(job.service)
        if self.capacity is None or service is None:
            return None
        lease = None
        if service.definition.get("enable_gpu"):
            lease = self.capacity.pool.acquire(job.name, self._stopped)
        self.capacity.timing.wait(self.capacity.timing.pod_start, self._stopped)
        return lease

    def _run_pod(self, job: Job) -> None:
        with self._lock:
            if self._stopping:
                return
            failure = self._failures.popleft() if self._failures else None
            killed = self._kills > 0
            if killed:
                self._kills -= 1
            killed_late = not killed and not failure and self._kills_after_start > 0
            if killed_late:
                self._kills_after_start -= 1
            leave_nothing = not killed and not killed_late and self._leave_nothing > 0
            if leave_nothing:
                self._leave_nothing -= 1
            job.status, job.start_time = RUNNING, _now()
        service = self.services.get(job.service)
        workdir = Path(tempfile.mkdtemp(prefix="oscar-double-job-", dir=JOB_TMP_DIR))
        log: list[str] = []
        # The pod ran to its end: whatever the script did, the job Succeeded.
        ok = service is not None and not killed
        try:
            if killed:
                log.append("the pod was killed (OOMKilled)\n")
                return
            input_dir, output_dir = workdir / "input", workdir / "output"
            input_dir.mkdir()
            output_dir.mkdir()
            input_file = input_dir / job.input_name
            if job.data is not None:
                input_file.write_bytes(job.data)
            else:
                assert job.bucket is not None and job.key is not None
                input_file.write_bytes(self.storage.get_object(job.bucket, job.key))
            if service is None:
                log.append(f"service {job.service} no longer exists\n")
            elif failure is not None:
                write_error(output_dir, job_id(input_file), failure, "JobFailed")
                log.append(f"the service reported a failure: {failure}\n")
            else:
                with pod.running(self._pod(job, service, workdir)):
                    self._timed(lambda: self._call_handler(service.handler, input_file,
                                                           output_dir, log))
            if killed_late:
                ok = False  # the pod dies before faas-supervisor uploads anything
                log.append("Killed\nthe pod was killed (OOMKilled)\n")
                return
            if leave_nothing:
                shutil.rmtree(output_dir)
                output_dir.mkdir()
            if service is not None:
                self._upload_outputs(service.outputs_for(job.bucket), output_dir, log)
        except Exception:
            ok = False  # the supervisor itself broke (input or upload): the pod fails
            log.append(traceback.format_exc())
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
            with self._lock:
                job.log = "".join(log)
                job.status = SUCCEEDED if ok else FAILED
                job.finish_time = _now()
            job.done.set()

    def _timed(self, run: Callable[[], None]) -> None:
        """The model load, the handler, and the generation's duration (capacity.py)."""
        if self.capacity is None:
            run()
            return
        timing = self.capacity.timing
        timing.wait(timing.model_load, self._stopped)
        run()
        timing.wait(timing.generation, self._stopped)
        self.capacity.pool.generated(timing.generation)

    @staticmethod
    def _call_handler(handler: Handler, input_file: Path, output_dir: Path,
                      log: list[str]) -> None:
        """Run the handler; what it raises goes to the log, as a script's output would."""
        try:
            output = handler(input_file, output_dir)
        except Exception:
            log.append(traceback.format_exc())
            return
        if isinstance(output, str):
            log.append(output)

    def _upload_outputs(self, outputs: list[StoragePath], output_dir: Path,
                        log: list[str]) -> None:
        """faas-supervisor's upload: every file, its name kept, to every output path."""
        files = sorted(p for p in output_dir.rglob("*") if p.is_file())
        for path in outputs:
            self.storage.make_bucket(path.bucket)
            for file in files:
                relative = file.relative_to(output_dir).as_posix()
                key = path.key_for(relative)
                if path.relative(key) is None:
                    continue
                event = self.storage.put_object(path.bucket, key, file.read_bytes())
                log.append(f"uploaded {path.bucket}/{key}\n")
                self.storage.written([event])

    def stop(self) -> None:
        self._stopped.set()
        if self.capacity is not None:
            self.capacity.pool.wake()
        with self._lock:
            self._stopping = True
            self._timers.clear()
            self._held_jobs.clear()
            self._timer_cond.notify_all()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._timer_thread.join(timeout=5)
