"""The orphan sweep: what no request runs for any more goes, and nothing else.

Orphans are made as an app crash or a lost delete leaves them: a job's input,
marker and result in the service's folders with nobody waiting for them.
"""

from __future__ import annotations

import logging
import time
import uuid
from functools import partial
from typing import Any

import anyio
import pytest

from oscar_sd import GenerationRequest, OscarSD, Progress, Stage
from oscar_sd._notify.hub import close_all_hubs
from oscar_sd._notify.orphans import NOTED, SweepPolicy
from tests.double import ClusterDouble
from tests.helpers import until

pytestmark = pytest.mark.anyio

BUCKET = "stable-diffusion"


@pytest.fixture(autouse=True)
def _fresh_hubs() -> Any:
    yield
    close_all_hubs()


async def test_the_sweep_removes_old_orphans_and_spares_a_live_request(
    cluster: ClusterDouble, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.INFO, logger="oscar_sd.hub")
    crashed = uuid.uuid4().hex  # an app died while this one ran: nobody deletes its objects
    orphans = [f"in/{crashed}.json", f"out/{crashed}.zip", f"out/{crashed}.started.json"]
    not_ours = ["out/README.txt", f"in/kept/{uuid.uuid4().hex}.json",
                f"history/{uuid.uuid4().hex}.json"]
    for key in orphans + not_ours:  # stored without an event: no job starts for them
        cluster.storage.put_object(BUCKET, key, b"left behind")
    cluster.hold_jobs()
    uploaded = anyio.Event()
    uploaded_at: list[float] = []

    def progress(report: Progress) -> None:
        if report.stage is Stage.UPLOADED:
            uploaded_at.append(time.time())
            uploaded.set()

    try:
        async with OscarSD.connect(cluster.oscar_endpoint, service=BUCKET,
                                   user=cluster.admin[0], password=cluster.admin[1]) as sd:
            sweep = sd._hub.orphans
            sweep.configure(SweepPolicy(grace=1.0, interval=0.2, first_after=0.0))
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(sd.generate, GenerationRequest(prompt="alive", num_images=1),
                                 progress)
                with anyio.fail_after(10):
                    await uploaded.wait()
                (live_input,) = [k for k in cluster.list_keys(BUCKET, "in/")
                                 if k.count("/") == 1 and k not in orphans]
                # A sweep whose cutoff is past the live request's upload: its input was
                # old enough to go, and only being live spared it.
                await until(lambda: sweep.last_cutoff > uploaded_at[0], limit=20)
                left = cluster.list_keys(BUCKET)
                assert live_input in left
                await until(lambda: not set(orphans) & set(cluster.list_keys(BUCKET)))
                cluster.release_jobs()
            assert sweep.swept == len(orphans)
    finally:
        cluster.release_jobs()
    await until(lambda: sorted(cluster.list_keys(BUCKET)) == sorted(not_ours))
    said = [r.getMessage() for r in caplog.records if "no longer run" in r.getMessage()]
    assert said and all("removing" in line for line in said)


async def test_a_run_a_history_waits_for_is_spared_until_its_noted_grace(
    cluster: ClusterDouble, caplog: pytest.LogCaptureFixture
):
    # Two apps died mid-run. The page had noted one run in its owner's history (its
    # input says so: inflight.py); the other was a command line's. The sweep of a
    # third process removes the second, and keeps the first for the owner's return.
    caplog.set_level(logging.INFO, logger="oscar_sd.hub")
    noted, nobodys = uuid.uuid4().hex, uuid.uuid4().hex
    for job, meta in ((noted, {NOTED: "1"}), (nobodys, None)):
        cluster.storage.put_object(BUCKET, f"in/{job}.json", b"{}", metadata=meta)
        for name in (f"out/{job}.zip", f"out/{job}.started.json"):
            cluster.storage.put_object(BUCKET, name, b"landed")
    written = time.time()
    cluster.hold_jobs()  # a request of this process keeps its hub, and so its sweep, running
    try:
        async with OscarSD.connect(cluster.oscar_endpoint, service=BUCKET,
                                   user=cluster.admin[0], password=cluster.admin[1]) as sd:
            sweep = sd._hub.orphans
            sweep.configure(SweepPolicy(grace=0.2, noted_grace=2.0, interval=0.1,
                                        first_after=0.0))
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(sd.generate, GenerationRequest(prompt="alive", num_images=1))
                await until(lambda: not any(nobodys in k for k in cluster.list_keys(BUCKET)))
                # As old as the one just removed, and still there: spared.
                assert sum(noted in key for key in cluster.list_keys(BUCKET)) == 3
                assert any("a history waits for" in r.getMessage() for r in caplog.records)
                # Once its owner has stayed away past the noted grace, it goes too.
                await until(lambda: not any(noted in k for k in cluster.list_keys(BUCKET)))
                cluster.release_jobs()
    finally:
        cluster.release_jobs()
    assert time.time() - written >= 1.0  # noted_grace 2 s, less LastModified's rounding


async def test_the_page_marks_the_input_of_a_noted_run(cluster: ClusterDouble):
    cluster.hold_jobs()
    seen: list[dict[str, str] | None] = []
    try:
        async with OscarSD.connect(cluster.oscar_endpoint, service=BUCKET,
                                   user=cluster.admin[0], password=cluster.admin[1]) as sd:
            uploaded = anyio.Event()

            def progress(report: Progress) -> None:
                if report.stage is Stage.UPLOADED:
                    uploaded.set()

            async with anyio.create_task_group() as tasks:
                for noted in (True, False):
                    job = uuid.uuid4().hex
                    tasks.start_soon(partial(sd.generate, GenerationRequest(prompt="p"),
                                             progress, job_id=job, noted=noted))
                    with anyio.fail_after(10):
                        await uploaded.wait()
                    uploaded = anyio.Event()
                    seen.append(await anyio.to_thread.run_sync(
                        sd._storage.metadata, BUCKET, f"in/{job}.json"))
                cluster.release_jobs()
    finally:
        cluster.release_jobs()
    assert seen[0] == {NOTED: "1"} and not seen[1]


async def test_a_client_that_keeps_its_objects_sweeps_nothing(cluster: ClusterDouble):
    async with OscarSD.connect(cluster.oscar_endpoint, service=BUCKET, user=cluster.admin[0],
                               password=cluster.admin[1], keep_objects=True) as sd:
        assert sd._hub.orphans.folders == set()
