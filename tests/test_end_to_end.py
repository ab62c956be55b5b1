"""The whole chain with the real service worker: upload, job, zip, event, download, unpack.

By default the jobs run in the cluster double, exactly as OSCAR runs them:
``manifests/script.sh`` under the job contract, with the tiny model. Where
``OSCAR_SD_E2E_ENDPOINT`` (plus ``OSCAR_SD_E2E_USER`` and
``OSCAR_SD_E2E_PASSWORD``, or ``OSCAR_SD_E2E_TOKEN``) is set, the first test
runs against that real cluster instead, and its service
(``OSCAR_SD_E2E_SERVICE``, default "stable-diffusion") must be deployed.
"""

from __future__ import annotations

import io
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from PIL import Image

from oscar_sd import GenerationRequest, JobFailedError, OscarSD
from oscar_sd._notify.hub import close_all_hubs
from oscar_sd.service import generate_images, run_job
from tests.double import ClusterDouble, ScriptHandler

pytestmark = pytest.mark.anyio

SCRIPT = Path(__file__).resolve().parents[1] / "manifests" / "script.sh"
REAL_CLUSTER = os.environ.get("OSCAR_SD_E2E_ENDPOINT", "")
needs_double = pytest.mark.skipif(
    bool(REAL_CLUSTER), reason="injects jobs into the cluster double; a real cluster is set"
)


def job_environment(model: str = "tiny") -> dict[str, str]:
    """What the service's container provides: the worker on PATH, the model to load."""
    return {
        "OSCAR_SD_MODEL": model,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }


@pytest.fixture
def double() -> Iterator[ClusterDouble]:
    with ClusterDouble(admin=("oscar", "oscar-pw")) as cluster:
        cluster.add_service(
            "stable-diffusion",
            input_path="stable-diffusion/in",
            output_path="stable-diffusion/out",
            handler=ScriptHandler(SCRIPT, env=job_environment(), timeout=300),
        )
        yield cluster
    close_all_hubs()


def connect_options(double: ClusterDouble | None) -> dict[str, Any]:
    if double is None:
        return {
            "endpoint": REAL_CLUSTER,
            "user": os.environ.get("OSCAR_SD_E2E_USER"),
            "password": os.environ.get("OSCAR_SD_E2E_PASSWORD"),
            "token": os.environ.get("OSCAR_SD_E2E_TOKEN"),
            "service": os.environ.get("OSCAR_SD_E2E_SERVICE", "stable-diffusion"),
        }
    return {"endpoint": double.oscar_endpoint, "user": "oscar", "password": "oscar-pw"}


def pixels(png: bytes) -> bytes:
    with Image.open(io.BytesIO(png)) as image:
        return image.convert("RGB").tobytes()


@pytest.fixture
def cluster_under_test(request: pytest.FixtureRequest) -> ClusterDouble | None:
    return None if REAL_CLUSTER else request.getfixturevalue("double")


async def test_a_prompt_becomes_images_through_the_real_worker(
    cluster_under_test: ClusterDouble | None,
):
    request = GenerationRequest(
        prompt="a red fox in the snow", seed=42, width=64, height=64, num_images=2, steps=2
    )
    options = connect_options(cluster_under_test)
    endpoint = options.pop("endpoint")
    with anyio.fail_after(300):
        async with OscarSD.connect(endpoint, **options) as sd:
            result = await sd.generate(request)
    assert [path.name for path in result.images] == ["1.png", "2.png"]
    for index, path in enumerate(result.images, start=1):
        with Image.open(path) as image:
            assert image.size == (64, 64)
            assert "a red fox in the snow" in image.text["parameters"]
            assert f"Seed: {42 + index - 1}" in image.text["parameters"]
            assert json.loads(image.text["oscar-sd"])["index"] == index
    if cluster_under_test is not None:
        # The job ran in its own process; the same request in this one gives the same images.
        here = generate_images(request, model="tiny")
        assert [pixels(path.read_bytes()) for path in result.images] == [
            pixels(image.png) for image in here
        ]


@needs_double
async def test_a_model_that_cannot_load_fails_the_request_with_the_services_message(
    double: ClusterDouble,
):
    double.add_service(
        "broken",
        input_path="broken/in",
        output_path="broken/out",
        handler=ScriptHandler(SCRIPT, env=job_environment("/nonexistent/model"), timeout=300),
    )
    with anyio.fail_after(300):
        async with OscarSD.connect(
            double.oscar_endpoint, user="oscar", password="oscar-pw", service="broken"
        ) as sd:
            with pytest.raises(JobFailedError) as caught:
                await sd.generate(GenerationRequest(prompt="anything", width=64, height=64))
    assert caught.value.error_type == "ModelLoadError"
    assert "/nonexistent/model" in str(caught.value)
    [job] = double.jobs("broken").values()
    # The worker exited non-zero, but faas-supervisor ignores exit codes: the failure
    # reached the app through <job>.error.json alone.
    assert job.done.wait(30) and job.status == "Succeeded"


@needs_double
async def test_concurrent_requests_through_the_in_process_worker(double: ClusterDouble):
    double.add_service(
        "in-process",
        input_path="in-process/in",
        output_path="in-process/out",
        handler=lambda input_file, output_dir: run_job(input_file, output_dir, model="tiny"),
    )
    requests = [
        GenerationRequest(prompt=f"picture {i}", seed=i, width=64, height=64, num_images=1, steps=2)
        for i in range(4)
    ]
    results: list[Any] = [None] * len(requests)
    async with OscarSD.connect(
        double.oscar_endpoint, user="oscar", password="oscar-pw", service="in-process"
    ) as sd:

        async def one(index: int) -> None:
            results[index] = await sd.generate(requests[index])

        with anyio.fail_after(300):
            async with anyio.create_task_group() as tasks:
                for index in range(len(requests)):
                    tasks.start_soon(one, index)
    for request, result in zip(requests, results, strict=True):
        [expected] = generate_images(request, model="tiny")
        assert pixels(result.images[0].read_bytes()) == pixels(expected.png)
