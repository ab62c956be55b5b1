"""Warm mode against the cluster double: replicas in threads, the app through OscarSD.generate."""

from __future__ import annotations

import io
import json
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator

import anyio
import pytest

from oscar_sd import GenerationRequest, OscarSD
from oscar_sd._connect import Connecting
from oscar_sd._service_paths import service_paths
from oscar_sd.service import generate_images
from tests.double import ClusterDouble
from tests.helpers import pixels
from tests.warm_fixtures import (
    WARM,
    ResultLog,
    ThreadReplica,
    connect_warm,
    deploy_warm,
    warm_cluster,
    warm_settings,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def double() -> Iterator[ClusterDouble]:
    with warm_cluster() as cluster:
        yield cluster


def connect(double: ClusterDouble) -> Connecting[OscarSD]:
    return connect_warm(double, timeout=120)


def test_the_app_finds_a_warm_services_folders_in_its_variables(double: ClusterDouble) -> None:
    definition = deploy_warm(double)
    assert not definition["input"]

    input_path, output_path = service_paths(definition)

    assert (input_path.bucket, input_path.folder) == (WARM, "in")
    assert (output_path.bucket, output_path.folder) == (WARM, "out")
    # Without an output entry the variable names it too.
    definition["output"] = []
    assert service_paths(definition)[1] == output_path


async def test_two_replicas_run_each_of_100_requests_exactly_once(double: ClusterDouble) -> None:
    log = ResultLog(double)
    requests = [GenerationRequest(prompt=f"request {n}", seed=n, width=64, height=64,
                                  num_images=1) for n in range(100)]
    with anyio.fail_after(240), ThreadReplica(warm_settings(double, "replica-a")) as a, \
            ThreadReplica(warm_settings(double, "replica-b")) as b:
        async with connect(double) as client:
            results = [None] * len(requests)

            async def run(index: int) -> None:
                results[index] = await client.generate(requests[index])

            async with anyio.create_task_group() as group:
                for index in range(len(requests)):
                    group.start_soon(run, index)

    jobs = {result.job_id for result in results}  # type: ignore[union-attr]
    assert len(jobs) == 100
    assert all(len(result.images) == 1 for result in results)  # type: ignore[union-attr]
    # Each request generated once, by one replica, and its zip written once.
    generated = a.worker.stats.generated.keys() | b.worker.stats.generated.keys()
    assert generated == jobs
    assert not a.worker.stats.generated.keys() & b.worker.stats.generated.keys()
    assert set(a.worker.stats.generated.values()) | set(b.worker.stats.generated.values()) == {1}
    assert log.results() == {f"out/{job}.zip": 1 for job in jobs}
    # Requests that came while the model was busy shared its calls.
    assert max(a.worker.stats.batches + b.worker.stats.batches) > 1


def test_batched_requests_give_the_images_each_makes_alone(double: ClusterDouble) -> None:
    """Requests queued while no replica runs go out in one call; pixels as when alone."""
    requests = [
        GenerationRequest(prompt="a red fox", seed=1, width=64, height=64, num_images=2),
        GenerationRequest(prompt="an owl at night", negative_prompt="blurry", seed=40,
                          width=64, height=64, num_images=3),
        GenerationRequest(prompt="a lighthouse", seed=7, width=64, height=64, num_images=1),
    ]
    for n, request in enumerate(requests):
        double.put_object(WARM, f"in/job{n}.json", json.dumps(request.to_payload()).encode())
    log = ResultLog(double)

    with ThreadReplica(warm_settings(double, "replica-a")) as replica:
        for n in range(len(requests)):
            assert log.wait_for(f"out/job{n}.zip", 120), f"no result for job{n}"

    assert replica.worker.stats.batches == [3]
    for n, request in enumerate(requests):
        with zipfile.ZipFile(io.BytesIO(double.get_object(WARM, f"out/job{n}.zip"))) as archive:
            batched = [archive.read(f"{i}.png") for i in range(1, request.num_images + 1)]
        alone = generate_images(request, model="tiny", device="cpu")
        for mine, theirs in zip(batched, alone, strict=True):
            assert (pixels(mine) == pixels(theirs.png)).all()


def test_an_invalid_request_gets_its_error_object(double: ClusterDouble) -> None:
    double.put_object(WARM, "in/bad.json", b'{"prompt": "x", "width": 3}')
    log = ResultLog(double)
    with ThreadReplica(warm_settings(double, "replica-a")):
        assert log.wait_for("out/bad.error.json", 60)
    report = json.loads(double.get_object(WARM, "out/bad.error.json"))
    assert report["type"] == "InvalidRequest" and "width" in report["error"]


def get(url: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_health_is_200_while_serving_and_answers_under_the_base_path(
    double: ClusterDouble,
) -> None:
    settings = warm_settings(double, "replica-a",
                             base_path=f"/system/services/{WARM}/exposed")
    replica = ThreadReplica(settings)
    assert replica.worker.check_health()[0] is False  # no model yet
    with replica:
        port = replica.worker.health.port  # type: ignore[union-attr]
        base = f"http://127.0.0.1:{port}"
        status, body = get(f"{base}/health")
        assert status == 200 and body["model"] == "tiny" and body["stopping"] is False
        assert get(f"{base}/system/services/{WARM}/exposed/health")[0] == 200
        assert get(f"{base}/elsewhere")[0] == 404
        replica.worker.request_stop()
        assert replica.worker.check_health()[0] is False  # stopping: no new traffic
