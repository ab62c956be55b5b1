"""``<job>.started.json``: the job tells the app it runs (issue 9), with the keys OSCAR mounts.

Against the cluster double's S3: the worker finds its MinIO keys in a providers
folder laid out as OSCAR mounts it (``accessKey``, ``secretKey``) and the
endpoint and output path in the service definition (``$FUNCTION_CONFIG``, as
faas-supervisor reads it when ``/oscar/config/function_config.yaml`` is absent).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from oscar_sd import GenerationRequest
from oscar_sd.service import StartedMarker, write_started_marker
from oscar_sd.service.marker import OutputStore
from tests.double import ClusterDouble, ScriptHandler

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "manifests" / "script.sh"


@pytest.fixture
def double() -> Iterator[ClusterDouble]:
    with ClusterDouble(admin=("oscar", "oscar-pw")) as cluster:
        yield cluster


def job_mounts(tmp_path: Path, double: ClusterDouble, endpoint: str | None = None,
               output: str = "stable-diffusion/out",
               isolation: dict[str, object] | None = None) -> dict[str, str]:
    """The environment of a job pod: the keys' folder and the service definition."""
    providers = tmp_path / "providers" / "minio.default"
    providers.mkdir(parents=True)
    (providers / "accessKey").write_text(double.minio_access_key)
    (providers / "secretKey").write_text(double.minio_secret_key)
    definition = {
        "name": "stable-diffusion",
        "output": [{"storage_provider": "minio.default", "path": output}],
        # What OSCAR puts there: the cluster's MinIO, as the pods reach it.
        "storage_providers": {"minio": {"default": {
            "endpoint": endpoint or double.minio_endpoint, "verify": True,
            "region": "us-east-1"}}},
        **(isolation or {}),
    }
    return {
        "OSCAR_SD_PROVIDERS_DIR": str(providers),
        "OSCAR_SD_FUNCTION_CONFIG": str(tmp_path / "absent.yaml"),
        "FUNCTION_CONFIG": base64.b64encode(yaml.safe_dump(definition).encode()).decode(),
        "JOB_UUID": "stable-diffusion-6a0c2e1e-1f3b-4c57-9d2e-0b8f0c6f7a11",
    }


def test_the_store_comes_from_the_mounted_keys_and_the_service_definition(
    tmp_path: Path, double: ClusterDouble, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in job_mounts(tmp_path, double, "https://minio.example.org:9000").items():
        monkeypatch.setenv(name, value)

    store = OutputStore.from_job_environment()

    assert store is not None
    assert (store.endpoint, store.secure, store.region) == ("minio.example.org:9000", True,
                                                            "us-east-1")
    assert (store.bucket, store.folder, store.key("j.started.json")) == (
        "stable-diffusion", "out", "out/j.started.json")
    assert store.access_key == double.minio_access_key
    assert double.minio_secret_key not in repr(store)
    # The warm service names its folder itself.
    monkeypatch.setenv("OSCAR_SD_OUTPUT_PATH", "warm/results/")
    store = OutputStore.from_job_environment()
    assert store is not None and (store.bucket, store.folder) == ("warm", "results")


def test_the_marker_lands_in_the_output_folder(
    tmp_path: Path, double: ClusterDouble, monkeypatch: pytest.MonkeyPatch
) -> None:
    double.make_bucket("stable-diffusion")
    for name, value in job_mounts(tmp_path, double).items():
        monkeypatch.setenv(name, value)

    assert write_started_marker("3f2a") == "written"

    body = json.loads(double.get_object("stable-diffusion", "out/3f2a.started.json"))
    assert body["job"] == "stable-diffusion-6a0c2e1e-1f3b-4c57-9d2e-0b8f0c6f7a11"
    assert body["host"] == socket.gethostname()
    assert body["started_at"].endswith("+00:00")


def test_without_keys_the_marker_is_skipped_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OSCAR_SD_PROVIDERS_DIR", str(tmp_path / "nothing-mounted"))
    with caplog.at_level(logging.INFO, logger="oscar_sd.service"):
        assert write_started_marker("3f2a") == "skipped"
    assert len(caplog.records) == 1 and "not writing the started marker" in caplog.text


@pytest.mark.timeout(30)  # the marker's own timeouts must end it, not pytest's 300 s
def test_an_unreachable_minio_does_not_fail_the_marker_call(
    tmp_path: Path, double: ClusterDouble, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    for name, value in job_mounts(tmp_path, double, closed).items():
        monkeypatch.setenv(name, value)

    started = time.monotonic()
    with caplog.at_level(logging.INFO, logger="oscar_sd.service"):
        assert write_started_marker("3f2a", marker=StartedMarker("j", "h", "t")) == "failed"
    assert time.monotonic() - started < 10  # connection refused, two quick retries
    assert "Could not write the started marker" in caplog.text
    assert double.minio_secret_key not in caplog.text


def test_the_job_writes_its_marker_before_its_result_where_its_outputs_go(
    tmp_path: Path, double: ClusterDouble
) -> None:
    """The real worker, in a USER-isolated service: the job started from a user's private
    bucket, so faas-supervisor uploads there (faassupervisor/storage/config.py) and the
    marker must land there too, read from the definition and ``$EVENT`` as the pod has them."""
    user = "alice-0123456789@egi.eu"
    private = "stable-diffusion-alice-0123"
    env = {
        **job_mounts(tmp_path, double, output="stable-diffusion/out",
                     isolation={"isolation_level": "USER", "bucket_list": [private]}),
        "OSCAR_SD_MODEL": "tiny",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(REPO),  # this checkout's worker, whatever the venv has installed
    }
    landed: list[str] = []
    double.on_object_created = lambda bucket, key, when: landed.append(f"{bucket}/{key}")
    double.add_service("stable-diffusion", input_path="stable-diffusion/in",
                       output_path="stable-diffusion/out", isolation_level="USER",
                       allowed_users=[user], handler=ScriptHandler(SCRIPT, env=env, timeout=240))
    request = GenerationRequest(prompt="a red fox", seed=3, width=64, height=64, num_images=1)

    body = json.dumps(request.to_payload()).encode()
    double.put_object(private, "in/c0ffee.json", body)
    (job,) = double.jobs("stable-diffusion").values()
    assert job.done.wait(240), "the job did not finish"

    assert job.status == "Succeeded", job.log
    assert [key for key in landed if "/out/" in key] == [
        f"{private}/out/c0ffee.started.json", f"{private}/out/c0ffee.zip"], job.log
    assert json.loads(double.get_object(private, "out/c0ffee.started.json"))[
        "job"].startswith("stable-diffusion-")
    assert f"Wrote the started marker {private}/out/c0ffee.started.json" in job.log
