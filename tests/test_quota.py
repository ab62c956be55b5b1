"""Quotas (issue 15): OSCAR's Kueue holds the jobs of users' services Suspended.

The double (tests/double/kueue.py) suspends every job of a service the admin
does not own until its owner's quota (2 CPU, 2Gi, no GPU by default) admits
it; a job asking more never runs until an admin raises the quota. The library
reports such a wait as its own stage and fails it after ``quota_timeout``.
"""

from __future__ import annotations

import threading

import anyio
import httpx
import pytest

from oscar_sd import GenerationRequest, JobFailedError, OscarSD, Progress, Stage
from oscar_sd.ui.progress import StageDisplay, stage_text
from tests.double import ClusterDouble, services

SERVICE = "alices-sd"
ALICE = "alice-quota@egi.eu"
#: What manifests/stable-diffusion.yaml asks for.
BIG = {"cpu": "4", "memory": "12Gi", "enable_gpu": True}


def deploy(cluster: ClusterDouble, handler: services.Handler = services.fake_generator,
           owner: str = ALICE, **resources: object) -> None:
    cluster.add_service(SERVICE, input_path=f"{SERVICE}/in", output_path=f"{SERVICE}/out",
                        handler=handler, owner=owner, **resources)


def upload(cluster: ClusterDouble, name: str = "job1") -> None:
    cluster.put_object(SERVICE, f"in/{name}.json", b'{"prompt": "p", "num_images": 1}')


def only_job(cluster: ClusterDouble):  # type: ignore[no-untyped-def]
    (job,) = cluster.jobs(SERVICE).values()
    return job


def listed(cluster: ClusterDouble) -> dict[str, dict[str, str]]:
    answer = httpx.get(f"{cluster.oscar_endpoint}/system/logs/{SERVICE}", auth=cluster.admin)
    answer.raise_for_status()
    return answer.json()["jobs"]


def test_a_job_asking_more_than_the_quota_stays_suspended_until_an_admin_raises_it(
    cluster: ClusterDouble,
) -> None:
    deploy(cluster, **BIG)
    upload(cluster)
    job = only_job(cluster)
    assert listed(cluster) == {job.name: {"status": "Suspended"}}  # no pod: no times

    # What an admin's PUT /system/quotas/user/<owner> does (tests/double/system.py).
    answer = httpx.put(f"{cluster.oscar_endpoint}/system/quotas/user/{ALICE}",
                       auth=cluster.admin, json={"cpu": "4000", "memory": str(12 * 2**30),
                                                 "gpu": "1"})
    assert answer.status_code == 200, answer.text

    assert job.done.wait(20)
    assert job.status == "Succeeded"


def test_the_quota_admits_jobs_as_others_end_and_admins_services_never_wait(
    cluster: ClusterDouble,
) -> None:
    gate = threading.Event()

    def held(input_file, output_dir):  # type: ignore[no-untyped-def]
        gate.wait(20)
        services.fake_generator(input_file, output_dir)

    deploy(cluster, held, cpu="1", memory="1Gi")  # two fit in 2 CPU / 2Gi, not three
    for name in ("a", "b", "c"):
        upload(cluster, name)
    statuses = sorted(job.status for job in cluster.jobs(SERVICE).values())
    assert statuses.count("Suspended") == 1
    quota = httpx.get(f"{cluster.oscar_endpoint}/system/quotas/user/{ALICE}",
                      auth=cluster.admin).json()["resources"]
    assert quota["cpu"] == {"max": 2000, "used": 2000}
    assert quota["memory"] == {"max": 2 * 2**30, "used": 2 * 2**30}
    gate.set()
    assert all(job.done.wait(20) for job in cluster.jobs(SERVICE).values())
    assert {job.status for job in cluster.jobs(SERVICE).values()} == {"Succeeded"}

    cluster.add_service("admins-sd", input_path="admins-sd/in", output_path="admins-sd/out",
                        owner="cluster_admin", **BIG)  # the admin's: never suspended
    cluster.put_object("admins-sd", "in/x.json", b'{"prompt": "p", "num_images": 1}')
    (job,) = cluster.jobs("admins-sd").values()
    assert job.status != "Suspended"


@pytest.mark.parametrize("version", ["3.6.5"])
def test_before_v4_there_is_no_kueue(version: str) -> None:
    with ClusterDouble(oscar_version=version) as cluster:
        deploy(cluster, **BIG)
        upload(cluster)
        assert only_job(cluster).done.wait(20)
        assert only_job(cluster).status == "Succeeded"


class Stages:
    def __init__(self) -> None:
        self.seen: list[Progress] = []
        self.quota = anyio.Event()

    def __call__(self, progress: Progress) -> None:
        self.seen.append(progress)
        if progress.stage is Stage.QUOTA:
            self.quota.set()


@pytest.mark.anyio
async def test_a_suspended_job_is_a_stage_of_its_own_and_fails_after_the_quota_timeout(
    oidc_cluster: ClusterDouble,
) -> None:
    deploy(oidc_cluster, **BIG)
    token = oidc_cluster.sign_in(ALICE)["access_token"]
    stages = Stages()
    async with await OscarSD.connect(oidc_cluster.oscar_endpoint, service=SERVICE, token=token,
                                     job_check_interval=0.2, quota_timeout=1.0) as alice:
        with anyio.fail_after(30), pytest.raises(JobFailedError) as caught:
            await alice.generate(GenerationRequest(prompt="too big", num_images=1),
                                 on_progress=stages)
    quota = [p for p in stages.seen if p.stage is Stage.QUOTA]
    assert quota and quota[0].message == "Waiting for the cluster's quota (1 job suspended)"
    assert caught.value.error_type == "QuotaExceeded"
    message = str(caught.value)
    assert "4 CPU, 12Gi of memory and 1 GPU" in message
    assert f"PUT /system/quotas/user/{ALICE}" in message
    assert '"gpu": "1"' in message and "2 CPU, 2Gi of memory and no GPU" in message
    assert alice.job_watch is not None and alice.job_watch.stats.quota == 1


@pytest.mark.anyio
async def test_once_the_quota_is_raised_the_request_runs(oidc_cluster: ClusterDouble) -> None:
    deploy(oidc_cluster, services.started_then(), **BIG)
    token = oidc_cluster.sign_in(ALICE)["access_token"]
    stages = Stages()
    async with await OscarSD.connect(oidc_cluster.oscar_endpoint, service=SERVICE, token=token,
                                     job_check_interval=0.2) as alice:
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tasks:
                async def run() -> None:
                    result = await alice.generate(
                        GenerationRequest(prompt="fits later", num_images=1), on_progress=stages)
                    assert len(result.images) == 1

                tasks.start_soon(run)
                await stages.quota.wait()
                oidc_cluster.set_quota(ALICE, cpu=4000, memory=16 * 2**30, gpu=1)
    order = [p.stage for p in stages.seen]
    assert Stage.QUOTA in order and Stage.RUNNING in order
    assert order.index(Stage.QUOTA) < order.index(Stage.RUNNING)


def test_the_page_names_the_quota_stage() -> None:
    report = Progress(Stage.QUOTA, "Waiting for the cluster's quota (2 jobs suspended)")
    assert stage_text(report) == "Waiting for the cluster's quota (2 jobs suspended)"
    assert stage_text(Progress(Stage.QUOTA, "")) == "Waiting for the cluster's quota"
    shown: list[tuple[object, str]] = []
    display = StageDisplay(lambda level, desc, unit: shown.append((level, desc)))
    display(report)
    assert shown[-1] == ((2, 4), "Waiting for the cluster's quota (2 jobs suspended)")
