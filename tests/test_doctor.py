"""``oscar-sd doctor`` against the double of each OSCAR release and with each fault.

Healthy: every check ✔ (or – where it does not apply), exit 0. Each fault is
made to happen on the double (a service with no storage policy for the user,
a restricted user's listen refused, a quota below the service, an old MinIO
release under a warm service, no GPU) and must print its ✘ and exit non-zero.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import pytest
import requests

from oscar_sd import DoctorReport, OscarSD, ServiceNotAvailableError, doctor
from oscar_sd.cli import EXIT_FAILURE, EXIT_OK, main
from oscar_sd.service.warm import WarmWorker
from tests.double import ClusterDouble
from tests.spill_fixtures import fake_batches
from tests.warm_fixtures import INPUT, OUTPUT, WARM, warm_settings

pytestmark = pytest.mark.anyio

ADMIN = ("oscar", "oscar-pw")
SERVICE = "stable-diffusion"


def _definition(**extra: Any) -> dict[str, Any]:
    return {"name": SERVICE, "image": "img", "script": "#!/bin/sh\n", "cpu": "1",
            "memory": "1Gi", "enable_gpu": True,
            "input": [{"storage_provider": "minio.default", "path": f"{SERVICE}/in"}],
            "output": [{"storage_provider": "minio.default", "path": f"{SERVICE}/out"}],
            **extra}


def _create(double: ClusterDouble, token: str | None, **extra: Any) -> None:
    """Create the service through OSCAR's API, as ``oscar-sd deploy`` does."""
    options: dict[str, Any] = ({"headers": {"Authorization": f"Bearer {token}"}} if token
                               else {"auth": ADMIN})
    answer = requests.post(f"{double.oscar_endpoint}/system/services",
                           json=_definition(**extra), timeout=10, **options)
    assert answer.status_code == 201, answer.text


@pytest.fixture
def double(versioned: ClusterDouble) -> ClusterDouble:
    """The double of the release given (conftest.py ``versioned``)."""
    return versioned


def _token(double: ClusterDouble, sub: str) -> str:
    return double.sign_in(sub)["access_token"]


def _marks(report: DoctorReport) -> dict[str, str]:
    return {check.name: check.status for check in report.checks}


def _failed(report: DoctorReport) -> list[str]:
    return [check.name for check in report.checks if check.status == "fail"]


@pytest.mark.parametrize("versioned", ["3.6.5", "4.0.0", "4.1.2"], indirect=True)
async def test_a_healthy_service_passes_on_each_release(double: ClusterDouble) -> None:
    alice = _token(double, "alice")
    _create(double, alice)
    double.set_quota("alice", gpu=1)

    report = await doctor(double.oscar_endpoint, token=alice, service=SERVICE)

    assert report.ok, report.text()
    marks = _marks(report)
    assert marks["test request"] == "ok" and marks["buckets"] == "ok"
    assert marks["quota"] == ("skip" if double.oscar_version == "3.6.5" else "ok")
    shape = "a list" if double.oscar_version == "4.1.2" else "a number"
    assert f"api_port as {shape}" in report.text()


async def test_no_storage_policy_for_a_service_the_admin_created(double: ClusterDouble) -> None:
    _create(double, None, visibility="public")  # seen by all, but no MinIO policy (create.go)
    report = await doctor(double.oscar_endpoint, token=_token(double, "alice"), service=SERVICE)
    assert _failed(report) == ["buckets"]
    assert "✘ buckets" in report.text() and "AccessDenied" in report.text()
    assert _marks(report)["test request"] == "skip"
    assert _marks(report)["GPUs"] == "ok"  # what does not depend on the buckets still runs


async def test_a_private_service_of_someone_else_is_not_there(double: ClusterDouble) -> None:
    _create(double, _token(double, "alice"))
    report = await doctor(double.oscar_endpoint, token=_token(double, "bob"), service=SERVICE)
    assert _failed(report) == ["service"] and not report.ok


async def test_a_restricted_users_listen_refused_is_a_failure(double: ClusterDouble) -> None:
    double.minio_keys_for("bob")
    _create(double, _token(double, "alice"), visibility="restricted", allowed_users=["bob"])
    double.set_quota("bob", gpu=1)
    # No test request: how long a listing-only request takes is the hub's to prove.
    report = await doctor(double.oscar_endpoint, token=_token(double, "bob"), service=SERVICE,
                          test_request=False)
    assert _failed(report) == ["notifications"], report.text()
    assert "403 AccessDenied" in report.text() and "listing-only" in report.text()
    # The fix names what the operator can change, not another storage server.
    assert "isolation_level: USER" in report.text(), report.text()
    assert "use MinIO" not in report.text()
    assert _marks(report)["buckets"] == "ok"  # restricted users may read and write


@pytest.mark.parametrize("versioned", ["4.0.0", "4.1.2"], indirect=True)
async def test_a_quota_below_the_service_is_a_failure_naming_the_fix(
        double: ClusterDouble) -> None:
    alice = _token(double, "alice")
    _create(double, alice, cpu="4", memory="12Gi")
    report = await doctor(double.oscar_endpoint, token=alice, service=SERVICE)
    assert _failed(report) == ["quota"]
    assert "4 CPU asked, the quota allows 2" in report.text()
    assert "PUT /system/quotas/user/alice" in report.text()


async def test_the_quota_checked_is_the_owners(versioned: ClusterDouble) -> None:
    double = versioned
    double.minio_keys_for("bob")
    _create(double, _token(double, "alice"), visibility="restricted", allowed_users=["bob"])
    as_admin = await doctor(double.oscar_endpoint, user=ADMIN[0], password=ADMIN[1],
                            service=SERVICE, test_request=False)
    assert _failed(as_admin) == ["quota"] and "its owner's quota" in as_admin.text()
    as_bob = await doctor(double.oscar_endpoint, token=_token(double, "bob"), service=SERVICE,
                          test_request=False)
    assert _marks(as_bob)["quota"] == "skip" and "owner's (alice) quota" in as_bob.text()


async def test_a_gpu_service_on_a_cluster_without_gpus(double: ClusterDouble) -> None:
    double.gpus = 0
    report = await doctor(double.oscar_endpoint, user=ADMIN[0], password=ADMIN[1],
                          service="nope", test_request=False)
    assert _failed(report) == ["service"]
    double.add_service(SERVICE, input_path=f"{SERVICE}/in", output_path=f"{SERVICE}/out",
                       enable_gpu=True)
    report = await doctor(double.oscar_endpoint, user=ADMIN[0], password=ADMIN[1],
                          service=SERVICE, test_request=False)
    assert _failed(report) == ["GPUs"]


def _deploy_warm(double: ClusterDouble) -> None:
    """The warm service as OSCAR runs it: one replica of the real WarmWorker loop."""
    definition = {"name": WARM, "enable_gpu": True,
                  "output": [{"storage_provider": "minio.default", "path": OUTPUT}],
                  "environment": {"variables": {"OSCAR_SD_INPUT_PATH": INPUT,
                                                "OSCAR_SD_OUTPUT_PATH": OUTPUT}},
                  "expose": {"api_port": [8080], "min_scale": 1, "max_scale": 1}}
    double.deploy_exposed(definition, lambda name: WarmWorker(
        warm_settings(double, name), generate=fake_batches(None)))
    assert double.exposed[WARM].wait_available(1, timeout=60)  # its pod's ready event


async def test_a_warm_service_is_healthy_and_answers(double: ClusterDouble) -> None:
    _deploy_warm(double)
    double.exposed[WARM].stop()
    assert double.exposed[WARM].wait_stopped(timeout=60)
    stopped = await doctor(double.oscar_endpoint, user=ADMIN[0], password=ADMIN[1],
                           service=WARM, test_request=False)
    assert _failed(stopped) == ["warm health"] and "stopped" in stopped.text()
    double.exposed[WARM].start()
    assert double.exposed[WARM].wait_available(1, timeout=60)
    report = await doctor(double.oscar_endpoint, user=ADMIN[0], password=ADMIN[1], service=WARM)
    assert report.ok, report.text()
    assert _marks(report)["warm health"] == "ok"
    assert _marks(report)["conditional PUT"] == "ok"


async def test_an_old_minio_under_a_warm_service_fails_the_conditional_put(
        double: ClusterDouble) -> None:
    double.minio_release = "RELEASE.2024-01-16T16-07-38Z"  # before * was honoured
    _deploy_warm(double)
    report = await doctor(double.oscar_endpoint, user=ADMIN[0], password=ADMIN[1], service=WARM,
                          test_request=False)
    assert _failed(report) == ["conditional PUT"], report.text()
    assert "RELEASE.2024-05-07" in report.text()


# -- the command --------------------------------------------------------------------


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("OSCAR_SD_") or name == "oscar_endpoint":
            monkeypatch.delenv(name)
    monkeypatch.setattr(sys, "stdin", open(os.devnull))


def test_the_command_exits_0_when_people_can_use_it_and_3_when_not(
        double: ClusterDouble, cli_env: None, capsys: pytest.CaptureFixture[str]) -> None:
    alice = _token(double, "alice")
    _create(double, alice)
    double.set_quota("alice", gpu=1)
    argv = ["doctor", "--endpoint", double.oscar_endpoint, "--token", alice]

    assert main(argv) == EXIT_OK
    healthy = capsys.readouterr().out
    assert healthy.rstrip().endswith("people can use it") and "✘" not in healthy

    double.set_quota("alice", gpu=0)
    assert main([*argv, "--json"]) == EXIT_FAILURE
    answer = json.loads(capsys.readouterr().out)
    assert answer["ok"] is False
    (quota,) = [check for check in answer["checks"] if check["name"] == "quota"]
    assert quota["status"] == "fail" and "PUT /system/quotas/user/alice" in quota["fix"]
    assert alice not in json.dumps(answer)


# -- what a person is told (the detail is the operator's) ---------------------------


async def test_a_person_is_told_only_to_ask_the_operator(
        double: ClusterDouble, caplog: pytest.LogCaptureFixture) -> None:
    _create(double, None, visibility="public")  # the admin's: no storage policy for people
    with pytest.raises(ServiceNotAvailableError) as refused:
        async with OscarSD.connect(double.oscar_endpoint, token=_token(double, "alice"),
                                   service=SERVICE):
            pass
    assert str(refused.value) == (f"Service {SERVICE!r} is not available to your account. "
                                  "Ask the cluster's operator to share it with you.")
    assert "AccessDenied" in caplog.text and "oscar-sd doctor" in caplog.text

    double.remove_service(SERVICE)
    _create(double, _token(double, "bob"))  # bob's own, private
    with pytest.raises(ServiceNotAvailableError):
        async with OscarSD.connect(double.oscar_endpoint, token=_token(double, "alice"),
                                   service=SERVICE):
            pass
