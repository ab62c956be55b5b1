"""Warm replicas that die or are told to stop: no request is lost, none runs twice.

Replicas run as ``python -m oscar_sd.service --warm`` processes, so a kill is
a real SIGKILL and a stop a real SIGTERM. Each test carries its own deadline.
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import urllib.parse
from collections.abc import Iterator

import anyio
import anyio.to_thread
import pytest
from minio import Minio

from oscar_sd import GenerationRequest, GenerationResult, OscarSD
from oscar_sd._connect import Connecting
from tests.double import ClusterDouble
from tests.helpers import until
from tests.warm_fixtures import (
    WARM,
    LogWatch,
    ResultLog,
    ThreadReplica,
    connect_warm,
    start_replica_process,
    warm_cluster,
    warm_settings,
)

pytestmark = pytest.mark.anyio
READY = "ready: model"


@pytest.fixture
def double() -> Iterator[ClusterDouble]:
    with warm_cluster() as cluster:
        yield cluster


def connect(double: ClusterDouble) -> Connecting[OscarSD]:
    return connect_warm(double, timeout=150)


def slow_request(n: int) -> GenerationRequest:
    """Seconds of work for the tiny model on CPU; each n a shape of its own."""
    return GenerationRequest(prompt=f"request {n}", seed=n, width=256 + 8 * n, height=256,
                             num_images=2, steps=12)


def started(process: subprocess.Popen[str]) -> LogWatch:
    watch = LogWatch(process)
    if not watch.wait_for(READY, 120):
        process.kill()
        pytest.fail(f"the replica did not get ready:\n{watch.text}")
    return watch


async def test_a_replica_killed_mid_request_leaves_a_claim_the_other_takes_over(
    double: ClusterDouble, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="oscar_sd.service")
    log = ResultLog(double)
    outcome: list[GenerationResult] = []
    with anyio.fail_after(150):
        dying = start_replica_process(double, OSCAR_SD_CLAIM_TTL="2")
        await anyio.to_thread.run_sync(started, dying)
        async with connect(double) as client:
            async with anyio.create_task_group() as group:

                async def ask() -> None:
                    outcome.append(await client.generate(slow_request(0)))

                group.start_soon(ask)
                claim = await anyio.to_thread.run_sync(log.wait_for_suffix, ".started.json", 60)
                assert claim is not None, "the replica never claimed the request"
                dying.kill()  # mid-request: claimed, generating, nothing written yet
                await anyio.to_thread.run_sync(dying.wait)
                assert not log.results(), "the request finished before the kill"

                survivor = ThreadReplica(warm_settings(double, "replica-b", claim_ttl=2.0))
                await anyio.to_thread.run_sync(survivor.__enter__)
                try:
                    job = claim.rsplit("/", 1)[1].removesuffix(".started.json")
                    while not log.results():
                        await anyio.to_thread.run_sync(log.wait_for, f"out/{job}.zip", 60)
                finally:
                    await anyio.to_thread.run_sync(survivor.__exit__, None, None, None)

    (result,) = outcome
    assert result.job_id == job and len(result.images) == 2
    assert log.results() == {f"out/{job}.zip": 1}
    assert survivor.worker.stats.generated == {job: 1}
    # The expired claim was replaced by the survivor (a PUT conditional on its ETag), not
    # duplicated. (The claim object itself went with the request: the app deletes it.)
    assert f"Took over request {job}: its claim expired" in caplog.text


async def test_sigterm_finishes_the_running_batch_and_loses_nothing(double: ClusterDouble) -> None:
    log = ResultLog(double)
    requests = [slow_request(n) for n in range(5)]  # five shapes: five rounds
    results: list[GenerationResult] = []
    with anyio.fail_after(240):
        stopping = start_replica_process(double)
        watch = await anyio.to_thread.run_sync(started, stopping)
        async with connect(double) as client:
            async with anyio.create_task_group() as group:

                async def ask(request: GenerationRequest) -> None:
                    results.append(await client.generate(request))

                for request in requests:
                    group.start_soon(ask, request)
                # Generating its first batch (claimed, running): the others still queued.
                generating = await anyio.to_thread.run_sync(watch.wait_for, "Generating ", 60)
                assert generating, watch.text
                stopping.send_signal(signal.SIGTERM)
                code = await anyio.to_thread.run_sync(stopping.wait, 120)
                assert code == 0, watch.text
                finished_by_a = set(log.results())
                assert 1 <= len(finished_by_a) < len(requests), watch.text
                assert "finishing the batch that runs" in watch.text

                # The rest are unclaimed inputs: another replica (or this one
                # restarted) takes them from the folder.
                replacement = ThreadReplica(warm_settings(double, "replica-b"))
                await anyio.to_thread.run_sync(replacement.__enter__)
        await anyio.to_thread.run_sync(replacement.__exit__, None, None, None)

    assert len(results) == len(requests)
    assert all(len(result.images) == 2 for result in results)
    jobs = {result.job_id for result in results}
    assert log.results() == {f"out/{job}.zip": 1 for job in jobs}  # none ran twice
    by_b = {f"out/{job}.zip" for job in replacement.worker.stats.generated}
    assert by_b == set(log.results()) - finished_by_a


def test_a_stop_between_claim_and_generation_releases_the_claim(double: ClusterDouble) -> None:
    """The stop lands after the claim was written and before generation: the
    replica gives the claim back at once (no waiting for it to expire), and
    another replica runs the request."""
    request = slow_request(0)
    double.put_object(WARM, "in/c0ffee.json", json.dumps(request.to_payload()).encode())
    log = ResultLog(double)
    stopping = ThreadReplica(warm_settings(double, "replica-a"))
    claim = stopping.worker.store.claim

    def claim_then_stop(job: str, replica: str, ttl: float) -> bool:
        won = claim(job, replica, ttl)
        stopping.worker.request_stop()  # SIGTERM's handler does just this
        return won

    stopping.worker.store.claim = claim_then_stop  # type: ignore[method-assign]
    stopping.thread.start()
    stopping.thread.join(60)
    assert not stopping.thread.is_alive() and stopping.error is None, stopping.error
    assert stopping.worker.stats.claims_won == 1
    assert stopping.worker.stats.released == 1 and not stopping.worker.stats.generated
    assert "out/c0ffee.started.json" not in double.list_keys(WARM, "out/")

    with ThreadReplica(warm_settings(double, "replica-b", claim_ttl=600.0)) as other:
        assert log.wait_for("out/c0ffee.zip", 60)
    assert other.worker.stats.generated == {"c0ffee": 1}
    assert log.results() == {"out/c0ffee.zip": 1}


async def test_a_request_finished_meanwhile_is_not_run_again(double: ClusterDouble) -> None:
    """Between reading a request and claiming it, another replica ran it and its
    client tidied up (the input first, then result and marker, in one request).
    The claim finds no marker, so it is won; the input is gone, so the replica
    gives the claim back and does not run the request a second time."""
    double.put_object(WARM, "in/c0ffee.json", json.dumps(slow_request(0).to_payload()).encode())
    late = ThreadReplica(warm_settings(double, "replica-a"))
    claim = late.worker.store.claim
    storage = Minio(urllib.parse.urlsplit(double.minio_endpoint).netloc,
                    double.minio_access_key, double.minio_secret_key, secure=False)

    def finished_elsewhere_then_claim(job: str, replica: str, ttl: float) -> bool:
        storage.remove_object(WARM, "in/c0ffee.json")  # the client's tidy, input first
        return claim(job, replica, ttl)

    late.worker.store.claim = finished_elsewhere_then_claim  # type: ignore[method-assign]
    stats = late.worker.stats
    with late:
        await until(lambda: stats.claims_lost == 1 or bool(stats.generated), 60,
                    "the claim given back, or the request run")
    assert not stats.generated, "a finished request ran again"
    assert stats.claims_won == 0 and stats.claims_lost == 1
    assert double.list_keys(WARM, "out/") == []  # its claim given back, nothing written
