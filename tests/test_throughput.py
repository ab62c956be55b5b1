"""Many requests at once: the hub never waits for an event loop, storage runs on the
library's own threads in two lanes, and a burst of results reaches every caller."""

from __future__ import annotations

import threading
from typing import Any

import anyio
import anyio.to_thread
import pytest

from oscar_sd import GenerationRequest, GenerationResult, OscarSD
from oscar_sd._notify.backoff import Backoff
from oscar_sd._notify.hub import NotificationHub, StreamAddress
from oscar_sd._storage import MinioStorage
from tests.double import ClusterDouble
from tests.helpers import until
from tests.test_oscar_client import Uploads, connect, expected, fingerprints, objects_left

pytestmark = pytest.mark.anyio

BUCKET = "stable-diffusion"



# -- the hub hands results to event loops without waiting for them --------------------


async def test_a_blocked_event_loop_does_not_delay_another_loops_results(
    cluster: ClusterDouble,
):
    storage = MinioStorage(cluster.minio_endpoint, cluster.minio_access_key,
                           cluster.minio_secret_key)
    address = StreamAddress(storage.endpoint, BUCKET, "out/", cluster.minio_access_key)
    hub = NotificationHub(address, storage.for_hub, backoff=Backoff(0.01, 0.1), idle_timeout=60)
    registered, unblock = threading.Event(), threading.Event()
    other: dict[str, Any] = {}

    def other_application() -> None:
        async def main() -> None:
            waiter = await hub.expect({"out/blocked.zip"})
            registered.set()
            other["released"] = unblock.wait(20)  # a sync call blocks this loop
            with anyio.fail_after(10):
                other["key"] = await waiter.wait()

        anyio.run(main)

    thread = threading.Thread(target=other_application)
    thread.start()
    try:
        with anyio.fail_after(10):
            while not await anyio.to_thread.run_sync(registered.wait, 0.05):
                pass
        mine = await hub.expect({"out/free.zip"})
        # The blocked loop's result lands first: a reader that waited for that loop
        # would hold this one back until the other application unblocked.
        await anyio.to_thread.run_sync(cluster.put_object, BUCKET, "out/blocked.zip", b"1")
        await anyio.to_thread.run_sync(cluster.put_object, BUCKET, "out/free.zip", b"2")
        with anyio.fail_after(5):
            assert await mine.wait() == "out/free.zip"
        assert not unblock.is_set()  # the other loop was still blocked
    finally:
        unblock.set()
        await anyio.to_thread.run_sync(thread.join, 30)
        await hub.aclose()
    assert other == {"released": True, "key": "out/blocked.zip"}
    assert hub.stats.resolved == 2  # each waiter counted once, however it was found


# -- the library's own threads, in two lanes -------------------------------------------


async def test_storage_runs_on_the_librarys_own_threads_not_anyios_default(
    cluster: ClusterDouble,
):
    async with connect(cluster) as sd:
        default = anyio.to_thread.current_default_thread_limiter()
        assert default not in (sd.limits.requests, sd.limits.results)
        total = default.total_tokens
        default.total_tokens = 1
        try:
            async with default:  # every default thread is taken (say, by a web framework)
                with anyio.fail_after(10):
                    result = await sd.generate(
                        GenerationRequest(prompt="own threads", seed=3, num_images=2)
                    )
        finally:
            default.total_tokens = total
    assert fingerprints(result.images) == expected(result.request)


async def test_a_flood_of_new_uploads_does_not_starve_a_finished_request(
    cluster: ClusterDouble,
):
    cluster.hold_jobs()
    uploads, done = Uploads(1), anyio.Event()
    finished: list[GenerationResult] = []

    async def finished_request(sd: OscarSD) -> None:
        request = GenerationRequest(prompt="ready first", seed=5, num_images=2)
        finished.append(await sd.generate(request, uploads))
        done.set()

    async with connect(cluster, storage_threads=4, timeout=600) as sd:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(finished_request, sd)
            with anyio.fail_after(10):
                await uploads.all_uploaded.wait()
            cluster.stall_uploads("in/")  # every new upload hangs in flight
            for index in range(60):
                tasks.start_soon(sd.generate, f"flood {index}")
            await until(lambda: cluster.stalled_uploads >= 4)  # all upload threads stuck
            cluster.release_jobs()  # the first request's result lands now
            with anyio.fail_after(10):
                await done.wait()
            assert cluster.stalled_uploads == 4  # the flood still holds its lane
            tasks.cancel_scope.cancel()
        cluster.resume_uploads()
    assert fingerprints(finished[0].images) == expected(finished[0].request)


async def test_a_cancelled_upload_that_ends_after_the_clean_up_is_deleted_once_it_ends(
    cluster: ClusterDouble,
):
    cluster.hold_jobs()
    stored = threading.Event()
    cluster.on_object_created = lambda bucket, key, when: key.startswith("in/") and stored.set()
    cluster.stall_uploads("in/")
    async with connect(cluster, timeout=600) as sd:
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(sd.generate, "cancelled mid-upload")
                await until(lambda: cluster.stalled_uploads == 1)  # the PUT is in flight
                tasks.cancel_scope.cancel()
            assert objects_left(cluster) == []  # nothing stored yet: nothing to delete
            cluster.resume_uploads()  # the abandoned upload completes after the clean-up
            while not await anyio.to_thread.run_sync(stored.wait, 0.05):
                pass
            # Deleted once it ended, by the hub's background clean-up (counted after
            # the delete request returns: wait for both).
            await until(lambda: objects_left(cluster) == [] and sd._hub.deletions.deleted == 1)


# -- a burst ---------------------------------------------------------------------------


async def test_a_burst_of_500_results_landing_at_once_each_caller_gets_its_own_images(
    cluster: ClusterDouble,
):
    count = 500
    cluster.hold_jobs()
    uploads = Uploads(count)
    requests = [GenerationRequest(prompt=f"burst {i}", seed=i, num_images=1)
                for i in range(count)]
    results: list[Any] = [None] * count

    async def one(sd: OscarSD, index: int) -> None:
        results[index] = await sd.generate(requests[index], uploads)

    async with connect(cluster, timeout=600) as sd:
        with anyio.fail_after(120):
            async with anyio.create_task_group() as tasks:
                for index in range(count):
                    tasks.start_soon(one, sd, index)
                await uploads.all_uploaded.wait()
                cluster.release_jobs()  # every result lands at once
        assert sd._hub.stats.resolved == count
    for result, request in zip(results, requests, strict=True):
        assert fingerprints(result.images) == expected(request, 1)
    assert len({result.directory for result in results}) == count
    # Clean-up that did not fit a request's own bound finishes in the background.
    await until(lambda: objects_left(cluster) == [], limit=60)
