"""``isolation_level: USER``: the started marker goes where faas-supervisor puts the outputs.

faas-supervisor (``faassupervisor/storage/config.py``, ``upload_output``) writes
a job's outputs to the event's private bucket when the event came from one of
the definition's ``bucket_list``, not to the definition's output path. The
worker's marker must land there too, or the app never hears "Running" and its
job watch never starts (issue 15).
"""

from __future__ import annotations

import json
import time

import anyio
import pytest

from oscar_sd import GenerationRequest, JobFailedError, OscarSD, Progress, Stage
from oscar_sd.service.marker import event_output_path
from tests.double import ClusterDouble, services

SERVICE = "private-sd"
USERS = ["alice-0123456789@egi.eu", "bob-9876543210@egi.eu"]
ALICE_BUCKET = "private-sd-alice-0123"


def minio_event(bucket: str, key: str) -> str:
    return json.dumps({"EventName": "s3:ObjectCreated:Put", "Key": f"{bucket}/{key}",
                       "Records": [{"s3": {"bucket": {"name": bucket}, "object": {"key": key}}}]})


def test_the_output_path_follows_the_event_into_the_private_bucket() -> None:
    config = {"isolation_level": "USER", "bucket_list": [ALICE_BUCKET]}
    event = minio_event(ALICE_BUCKET, "input/3f2a.json")

    assert event_output_path("private-sd/output", config, event) == f"{ALICE_BUCKET}/output"
    # A job from the shared bucket, a bucket not listed, or no isolation: the definition's.
    assert event_output_path("private-sd/output", config,
                             minio_event("private-sd", "input/x.json")) == "private-sd/output"
    assert event_output_path("private-sd/output", {"bucket_list": [ALICE_BUCKET]},
                             event) == "private-sd/output"
    assert event_output_path("private-sd/output", config, "not json") == "private-sd/output"


def deploy(cluster: ClusterDouble, handler: services.Handler) -> None:
    cluster.add_service(SERVICE, input_path=f"{SERVICE}/input", output_path=f"{SERVICE}/output",
                        handler=handler, isolation_level="USER", allowed_users=USERS)


async def connect(cluster: ClusterDouble, **options: object) -> OscarSD:
    token = cluster.sign_in(USERS[0])["access_token"]
    return await OscarSD.connect(cluster.oscar_endpoint, service=SERVICE, token=token,
                                 connect_timeout=5.0, **options)  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_an_isolated_users_request_is_seen_running(oidc_cluster: ClusterDouble) -> None:
    deploy(oidc_cluster, services.started_then())
    landed: list[tuple[str, str]] = []
    oidc_cluster.on_object_created = lambda bucket, key, when: landed.append((bucket, key))
    stages: list[Stage] = []

    def on_progress(progress: Progress) -> None:
        stages.append(progress.stage)

    async with await connect(oidc_cluster, keep_objects=True) as alice:
        with anyio.fail_after(30):
            result = await alice.generate(GenerationRequest(prompt="mine", num_images=1),
                                          on_progress=on_progress)

    assert Stage.RUNNING in stages
    marker = f"output/{result.job_id}.started.json"
    assert (ALICE_BUCKET, marker) in landed
    assert not [key for bucket, key in landed if bucket == SERVICE]  # nothing shared
    (job,) = oidc_cluster.jobs(SERVICE).values()
    assert json.loads(oidc_cluster.get_object(ALICE_BUCKET, marker))["job"] == job.name


@pytest.mark.anyio
async def test_the_job_watch_fails_an_isolated_request_whose_pod_died(
    oidc_cluster: ClusterDouble,
) -> None:
    deploy(oidc_cluster, services.started_then())
    oidc_cluster.kill_next_job_after_start()
    async with await connect(oidc_cluster, job_check_interval=1.0, timeout=600) as alice:
        started = time.monotonic()
        with anyio.fail_after(30), pytest.raises(JobFailedError) as caught:
            await alice.generate(GenerationRequest(prompt="dies quietly", num_images=1))
        took = time.monotonic() - started
    (job,) = oidc_cluster.jobs(SERVICE).values()
    assert str(caught.value).startswith(f"The job failed: OSCAR reports job {job.name} as Failed")
    assert alice.job_watch.stats.failed == 1
    assert took < 15
