"""Warm claims on MinIO releases that do not honour ``If-None-Match: *`` (issue 15).

The double's ``minio_release`` answers conditional PUTs as that release does
(tests/double/conditional.py). At start a warm replica probes that a second
``If-None-Match: *`` PUT is refused; when it is not, it says why in its log and
``/health`` and claims alone, or refuses to start when more replicas may run.
"""

from __future__ import annotations

import json
import logging
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
import yaml
from minio import Minio
from minio.error import S3Error

from oscar_sd import GenerationRequest
from oscar_sd._claim_probe import PROBE_FOLDER, probe_conditional_put
from oscar_sd.service.errors import EXIT_ENVIRONMENT, ConfigurationError
from oscar_sd.service.warm import WarmWorker
from oscar_sd.service.warm_config import WarmSettings
from tests.double import ClusterDouble
from tests.warm_fixtures import (
    WARM,
    ThreadReplica,
    connect_warm,
    start_replica_process,
    warm_cluster,
    warm_environment,
    warm_settings,
)

OLD = "RELEASE.2024-04-28T17-53-50Z"  # before * was honoured
BROKEN = "RELEASE.2025-09-06T17-38-46Z"  # conditional PUT of a missing key refused
FIXED = "RELEASE.2025-09-07T16-13-09Z"


@pytest.fixture
def double() -> Iterator[ClusterDouble]:
    with warm_cluster() as cluster:
        yield cluster


def client(double: ClusterDouble) -> Minio:
    return Minio(double.minio_endpoint.split("://", 1)[1], double.minio_access_key,
                 double.minio_secret_key, secure=False)


def test_the_double_answers_if_none_match_star_as_each_release(double: ClusterDouble) -> None:
    minio = client(double)
    star = {"If-None-Match": "*"}
    double.minio_release = OLD  # compared as a literal ETag: both creators win
    minio._put_object(WARM, "out/a.json", b"1", headers=star)
    minio._put_object(WARM, "out/a.json", b"2", headers=star)
    assert double.get_object(WARM, "out/a.json") == b"2"

    double.minio_release = BROKEN  # the first conditional PUT of a key already fails
    with pytest.raises(S3Error) as refused:
        minio._put_object(WARM, "out/b.json", b"1", headers=star)
    assert (refused.value.code, refused.value.response.status) == ("NoSuchKey", 404)

    double.minio_release = FIXED
    minio._put_object(WARM, "out/c.json", b"1", headers=star)
    with pytest.raises(S3Error) as taken:
        minio._put_object(WARM, "out/c.json", b"2", headers=star)
    assert taken.value.code == "PreconditionFailed"


@pytest.mark.parametrize(("release", "outcome"), [
    (FIXED, "honoured"), ("RELEASE.2024-12-18T13-15-44Z", "honoured"),
    (OLD, "ignored"), (BROKEN, "refused")])
def test_the_probe_says_which_and_leaves_nothing_behind(
    double: ClusterDouble, release: str, outcome: str,
) -> None:
    double.minio_release = release

    probe = probe_conditional_put(client(double), WARM, "out")

    assert (probe.outcome, probe.honoured) == (outcome, outcome == "honoured")
    assert bool(probe.problem) == bool(probe.fix) == (outcome != "honoured")
    assert not [key for key in double.list_keys(WARM) if PROBE_FOLDER in key]


def health(replica: ThreadReplica) -> dict[str, object]:
    assert replica.worker.health is not None
    url = f"http://127.0.0.1:{replica.worker.health.port}/health"
    with urllib.request.urlopen(url, timeout=10) as answer:
        return json.loads(answer.read())


@pytest.mark.anyio
async def test_on_a_broken_release_one_replica_claims_alone_and_runs_the_request(
    double: ClusterDouble, caplog: pytest.LogCaptureFixture,
) -> None:
    double.minio_release = BROKEN  # every If-None-Match: * claim would fail with NoSuchKey
    request = GenerationRequest(prompt="a fox", seed=1, width=64, height=64, num_images=1)
    with caplog.at_level(logging.WARNING, logger="oscar_sd.service"), \
            ThreadReplica(warm_settings(double, "alone", replicas=1)) as replica:
        assert "only claimer" in str(health(replica)["claims"])
        assert "RELEASE.2025-09-07" in str(health(replica)["claims"])
        with anyio.fail_after(60):
            async with connect_warm(double, timeout=60) as app:
                result = await app.generate(request)
    assert len(result.images) == 1
    assert replica.worker.stats.generated == {result.job_id: 1}
    assert "Running as the only claimer" in caplog.text


def test_with_more_replicas_allowed_an_old_release_refuses_to_start(
    double: ClusterDouble,
) -> None:
    double.minio_release = OLD
    worker = WarmWorker(warm_settings(double, "one-of-two", replicas=2))

    with pytest.raises(ConfigurationError) as refused:
        worker.serve()

    message = str(refused.value)
    assert "two replicas could both claim one request" in message
    assert "RELEASE.2024-05-07" in message and "max_scale: 1" in message
    assert worker.health is None  # refused before loading the model or serving /health


def test_on_a_good_release_health_says_claims_are_exclusive(double: ClusterDouble) -> None:
    with ThreadReplica(warm_settings(double, "normal", replicas=3)) as replica:
        assert str(health(replica)["claims"]).startswith("exclusive")
        assert replica.worker.store.conditional


def test_the_replica_count_comes_from_the_definitions_max_scale(
    double: ClusterDouble, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    config = tmp_path / "function_config.yaml"
    for name, value in warm_environment(double, OSCAR_SD_FUNCTION_CONFIG=str(config)).items():
        monkeypatch.setenv(name, value)
    config.write_text(yaml.safe_dump({"name": WARM, "expose": {"min_scale": 1, "max_scale": 2}}))
    assert WarmSettings.from_environment().replicas == 2
    config.write_text(yaml.safe_dump({"name": WARM, "expose": {"api_port": 8080}}))
    assert WarmSettings.from_environment().replicas == 10  # OSCAR's default max_scale
    monkeypatch.setenv("OSCAR_SD_REPLICAS", "1")
    assert WarmSettings.from_environment().replicas == 1
    monkeypatch.delenv("OSCAR_SD_REPLICAS")
    config.unlink()
    assert WarmSettings.from_environment().replicas == 1  # not an exposed service


def test_a_replica_process_that_may_not_claim_alone_exits_saying_why(
    double: ClusterDouble, tmp_path: Path,
) -> None:
    double.minio_release = OLD
    config = tmp_path / "function_config.yaml"
    config.write_text(yaml.safe_dump({"name": WARM, "expose": {"max_scale": 2}}))
    process = start_replica_process(double, OSCAR_SD_FUNCTION_CONFIG=str(config))
    output, _ = process.communicate(timeout=120)
    assert process.returncode == EXIT_ENVIRONMENT, output
    assert "Claims cannot be exclusive" in output and "up to 2 replicas" in output
    assert double.minio_secret_key not in output
