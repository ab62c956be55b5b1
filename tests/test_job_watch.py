"""The job tells the app where it is (issue 9, section 1), end to end through the double.

The service's jobs write ``<job>.started.json`` straight to storage as the real
worker does (``services.started_then``); the request moves from "Waiting for a
GPU" to "Running on the GPU"; the client's job watch then checks the job on
OSCAR, so a job that dies without a word fails its request in seconds.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

from oscar_sd import GenerationRequest, JobFailedError, OscarSD, Progress, Stage
from oscar_sd._jobwatch import FAILED_BY, JobWatch, useful_line
from oscar_sd.ui.progress import stage_text
from tests.double import ClusterDouble, services
from tests.helpers import until

pytestmark = pytest.mark.anyio

SERVICE = "stable-diffusion"
LIST_JOBS = "GET /system/logs/<service>"


def connect(cluster: ClusterDouble, **options: Any) -> Any:
    options.setdefault("connect_timeout", 5.0)
    return OscarSD.connect(cluster.oscar_endpoint, user=cluster.admin[0],
                           password=cluster.admin[1], service=SERVICE, **options)


def deploy(cluster: ClusterDouble, handler: services.Handler) -> None:
    cluster.add_service(SERVICE, input_path=f"{SERVICE}/in", output_path=f"{SERVICE}/out",
                        handler=handler)


def gated(gate: threading.Event) -> services.Handler:
    """Says it started, then generates only once ``gate`` opens: a job that runs a while."""

    def generate(input_file: Path, output_dir: Path) -> None:
        gate.wait(30)
        services.fake_generator(input_file, output_dir)

    return services.started_then(generate)


class Running:
    """Each request's stages, and an event once ``expected`` of them run on the GPU."""

    def __init__(self, expected: int = 1) -> None:
        self.expected = expected
        self.stages: list[list[Stage]] = []
        self.messages: list[str] = []
        self.all_running = anyio.Event()

    def callback(self) -> Callable[[Progress], None]:
        stages: list[Stage] = []
        self.stages.append(stages)

        def on_progress(progress: Progress) -> None:
            stages.append(progress.stage)
            self.messages.append(progress.message)
            running = sum(Stage.RUNNING in each for each in self.stages)
            if progress.stage is Stage.RUNNING and running == self.expected:
                self.all_running.set()

        return on_progress


async def until_rounds(watch: JobWatch, condition: Callable[[], bool]) -> None:
    """Wait, round after round of the job watch, until ``condition`` holds."""
    while not condition():
        await watch.next_round()


def objects_left(cluster: ClusterDouble) -> list[str]:
    return cluster.list_keys(SERVICE)


# -- the started marker ------------------------------------------------------------


async def test_the_started_marker_moves_the_request_from_waiting_to_running(
    cluster: ClusterDouble,
):
    deploy(cluster, services.started_then())
    running = Running()
    async with connect(cluster) as sd:
        with anyio.fail_after(20):
            result = await sd.generate(GenerationRequest(prompt="a fox", num_images=2),
                                       running.callback())
    (stages,) = running.stages
    # The marker may be heard before the upload call returns (a busy machine): then
    # "uploaded" and "waiting" are never said, never after "running".
    assert stages in ([Stage.UPLOADED, Stage.WAITING, Stage.RUNNING, Stage.DOWNLOADING,
                       Stage.DONE], [Stage.RUNNING, Stage.DOWNLOADING, Stage.DONE]), stages
    assert "Running on the GPU" in running.messages
    assert len(result.images) == 2
    assert sd._hub.stats.progress == 1  # the marker came as a progress key, not a result
    assert objects_left(cluster) == []  # input, result and marker: all gone with the request


async def test_a_marker_heard_before_the_upload_returns_never_goes_back_to_waiting(
    cluster: ClusterDouble, monkeypatch: pytest.MonkeyPatch,
):
    """The race a loaded machine makes: the job starts and its marker is delivered while
    the upload call has not yet returned. Forced here: the upload returns only once the
    request is running."""
    deploy(cluster, services.started_then())
    running = Running()
    heard_running = threading.Event()

    def on_progress(progress: Progress) -> None:
        callback(progress)
        if progress.stage is Stage.RUNNING:
            heard_running.set()

    callback = running.callback()
    async with connect(cluster) as sd:
        put = sd._storage.put

        def put_then_wait_for_the_marker(*args: Any) -> None:
            put(*args)
            heard_running.wait(20)  # an event: the marker's delivery on the event loop

        monkeypatch.setattr(sd._storage, "put", put_then_wait_for_the_marker)
        with anyio.fail_after(20):
            result = await sd.generate(GenerationRequest(prompt="a fox", num_images=1),
                                       on_progress)
    assert running.stages == [[Stage.RUNNING, Stage.DOWNLOADING, Stage.DONE]]
    assert "Waiting for a GPU" not in running.messages
    assert len(result.images) == 1


async def test_a_cancelled_request_leaves_no_marker_behind(cluster: ClusterDouble):
    gate = threading.Event()
    deploy(cluster, gated(gate))
    running = Running()
    try:
        async with connect(cluster) as sd:
            with anyio.fail_after(20):
                async with anyio.create_task_group() as tasks:
                    tasks.start_soon(sd.generate, "cancel me", running.callback())
                    await running.all_running.wait()
                    assert any(key.endswith(".started.json") for key in objects_left(cluster))
                    tasks.cancel_scope.cancel()
                gate.set()  # the job now writes its result, for nobody: the hub deletes it
                (job,) = cluster.jobs(SERVICE).values()
                await anyio.to_thread.run_sync(job.done.wait, 20)
                await until(lambda: objects_left(cluster) == [], what="everything deleted")
    finally:
        gate.set()


async def test_a_marker_whose_event_was_lost_is_found_by_reconciliation(
    cluster: ClusterDouble,
):
    gate = threading.Event()
    deploy(cluster, gated(gate))
    running = Running()
    try:
        async with connect(cluster) as sd:
            gate.set()
            await sd.generate(GenerationRequest(prompt="warm-up", num_images=1))
            gate.clear()  # the stream is open and caught up; the next job runs until told
            connects = sd._hub.stats.connects
            cluster.lose_next_event("out/")  # the next started marker reaches no stream
            with anyio.fail_after(20):
                async with anyio.create_task_group() as tasks:
                    tasks.start_soon(sd.generate, "lost marker", running.callback())
                    await running.all_running.wait()  # no result yet: the gate is shut
                    assert sd._hub.stats.connects == connects  # no reconnect, no catch-up
                    gate.set()
            assert running.stages[0].count(Stage.RUNNING) == 1
            assert sd._hub.stats.progress_reconciled == 1  # the path that found it
    finally:
        gate.set()


# -- jobs that end without a result ---------------------------------------------------


async def test_a_job_killed_after_its_marker_fails_the_request_within_30_s(
    cluster: ClusterDouble,
):
    deploy(cluster, services.started_then())
    cluster.kill_next_job_after_start()
    async with connect(cluster, job_check_interval=1.0, timeout=600) as sd:
        started = time.monotonic()
        with anyio.fail_after(30), pytest.raises(JobFailedError) as caught:
            await sd.generate("dies quietly")
        took = time.monotonic() - started
    (job,) = cluster.jobs(SERVICE).values()
    assert job.status == "Failed"
    message = str(caught.value)
    assert message.startswith(f"The job failed: OSCAR reports job {job.name} as Failed")
    assert "OOMKilled" in message  # a line of the job's log
    assert caught.value.error_type == "JobFailed"
    assert sd.job_watch.stats.failed == 1  # the watch failed it, not the deadline
    assert sd._hub.stats.resolved == 0
    assert took < 10
    assert objects_left(cluster) == []


async def test_a_job_that_succeeds_without_a_result_fails_the_request(cluster: ClusterDouble):
    deploy(cluster, services.started_then())
    cluster.next_job_leaves_no_result()
    async with connect(cluster, job_check_interval=1.0, timeout=600) as sd:
        with anyio.fail_after(30), pytest.raises(JobFailedError) as caught:
            await sd.generate("writes nothing")
    (job,) = cluster.jobs(SERVICE).values()
    assert job.status == "Succeeded"
    assert f"OSCAR reports job {job.name} as Succeeded, but it wrote no result" in str(
        caught.value)
    assert caught.value.error_type == "NoResult"
    assert sd.job_watch.stats.no_result == 1
    assert objects_left(cluster) == []


async def test_a_deleted_job_is_said_to_be_deleted(cluster: ClusterDouble):
    gate = threading.Event()
    deploy(cluster, gated(gate))
    running = Running()
    try:
        async with connect(cluster, job_check_interval=0.3, timeout=600) as sd:
            with anyio.fail_after(20):
                async with anyio.create_task_group() as tasks:

                    async def request() -> None:
                        with pytest.raises(JobFailedError, match="no longer lists job"):
                            await sd.generate("deleted", running.callback())

                    tasks.start_soon(request)
                    await running.all_running.wait()
                    await until_rounds(sd.job_watch, lambda: sd.job_watch.stats.rounds >= 1)
                    (name,) = cluster.jobs(SERVICE)
                    cluster.runner.delete_job(SERVICE, name)
            assert sd.job_watch.stats.gone == 1
    finally:
        gate.set()


# -- the watch's own trouble and cost -------------------------------------------------


async def test_a_cluster_api_outage_during_the_watch_does_not_fail_the_request(
    cluster: ClusterDouble, caplog: pytest.LogCaptureFixture,
):
    gate = threading.Event()
    deploy(cluster, gated(gate))
    running = Running()
    try:
        async with connect(cluster, job_check_interval=0.2, timeout=600) as sd:
            watch = sd.job_watch
            with anyio.fail_after(20), caplog.at_level(logging.INFO, logger="oscar_sd.jobs"):
                async with anyio.create_task_group() as tasks:
                    results: list[Any] = []

                    async def request() -> None:
                        results.append(await sd.generate("through an outage",
                                                         running.callback()))

                    tasks.start_soon(request)
                    await running.all_running.wait()
                    cluster.oscar_api_down = True
                    await until_rounds(watch, lambda: watch.stats.list_failures >= 3)
                    cluster.oscar_api_down = False
                    listed = watch.stats.rounds
                    await until_rounds(watch, lambda: watch.stats.rounds > listed)
                    gate.set()
            assert len(results) == 1 and len(results[0].images) == 6
    finally:
        cluster.oscar_api_down = False
        gate.set()
    complaints = [r for r in caplog.records if "could not list the service's jobs" in r.message]
    assert len(complaints) == 1  # once per outage, however many rounds failed
    assert "ClusterRequestError" in complaints[0].message
    assert cluster.admin[1] not in caplog.text


async def test_one_job_listing_a_round_however_many_requests_run(cluster: ClusterDouble):
    gate = threading.Event()
    deploy(cluster, gated(gate))
    count, interval = 6, 0.25
    running = Running(count)
    try:
        async with connect(cluster, job_check_interval=interval, timeout=600) as sd:
            watch = sd.job_watch
            with anyio.fail_after(30):
                async with anyio.create_task_group() as tasks:
                    for index in range(count):
                        tasks.start_soon(sd.generate, f"request {index}", running.callback())
                    await running.all_running.wait()
                    watching = time.monotonic()
                    await until_rounds(watch, lambda: watch.stats.rounds >= 6)
                    # Counted while all six wait: once they end, the listing of a follower
                    # cancelled mid-round (the request done) reaches the cluster without
                    # counting as a round.
                    rounds, listed = watch.stats.rounds, cluster.oscar_requests[LIST_JOBS]
                    gate.set()
                watched = time.monotonic() - watching
    finally:
        gate.set()
    # One listing a round for all six requests (one page each, 6 jobs), not one each; at
    # most one more already on its way to the cluster as the rounds were counted.
    assert rounds <= listed <= rounds + 1
    assert watch.stats.rounds <= watched / interval + 2


async def test_waiting_requests_hear_how_many_jobs_are_queued(cluster: ClusterDouble):
    gate = threading.Event()
    deploy(cluster, gated(gate))
    first, queued = Running(), Running()
    try:
        async with connect(cluster, job_check_interval=0.2, timeout=600) as sd:
            with anyio.fail_after(20):
                async with anyio.create_task_group() as tasks:
                    tasks.start_soon(sd.generate, "runs", first.callback())
                    await first.all_running.wait()
                    cluster.hold_jobs()  # the next jobs stay Pending: no GPU for them
                    tasks.start_soon(sd.generate, "queued 1", queued.callback())
                    tasks.start_soon(sd.generate, "queued 2", queued.callback())
                    await until_rounds(
                        sd.job_watch,
                        lambda: "Waiting for a GPU (2 jobs queued)" in queued.messages)
                    cluster.release_jobs()
                    gate.set()
    finally:
        cluster.release_jobs()
        gate.set()
    # The page shows it as it is (oscar_sd/ui/progress.py).
    shown = stage_text(Progress(Stage.WAITING, "Waiting for a GPU (2 jobs queued)"))
    assert shown == "Waiting for a GPU (2 jobs queued)"


async def test_without_the_password_there_is_no_job_watch(cluster: ClusterDouble):
    async with connect(cluster, keep_password=False) as sd:
        assert sd.job_watch is None  # listing jobs would ask to log in again
    async with connect(cluster, job_check_interval=None) as sd:
        assert sd.job_watch is None


# -- what may be shown of a job's log ---------------------------------------------------


def test_a_log_line_shown_never_carries_a_key():
    secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    log = (
        "loading model\n"
        f"env: AWS_SECRET_ACCESS_KEY={secret} password: hunter2\n"
        "Authorization: Bearer eyJhbGciOi.payload.sig\n"
        f"RuntimeError: CUDA out of memory (key {secret}) at http://admin:pw@minio:9000\n"
        "\x1b[0m\n"
    )
    line = useful_line(log, hidden=(secret,))
    assert line.startswith("RuntimeError: CUDA out of memory")
    assert secret not in line and "admin:pw" not in line
    for leaky in ("hunter2", "eyJhbGciOi", "EXAMPLEKEY"):
        assert leaky not in useful_line(log)
    assert len(useful_line("x" * 500 + " error")) <= 160
    assert FAILED_BY == "job-watch"


async def test_a_lone_waiting_request_hears_its_place_in_line(cluster: ClusterDouble):
    """No job of this client runs, so no running request lists the jobs: the waiting
    one does, once an interval."""
    queued = Running()
    try:
        async with connect(cluster, job_check_interval=0.2, timeout=600) as sd:
            cluster.hold_jobs()  # its job stays Pending: no GPU for it
            with anyio.fail_after(20):
                async with anyio.create_task_group() as tasks:
                    tasks.start_soon(sd.generate, "alone", queued.callback())
                    await until_rounds(
                        sd.job_watch, lambda: "Waiting for a GPU (1 job queued)" in queued.messages)
                    cluster.release_jobs()
    finally:
        cluster.release_jobs()
