"""Spill-over: a warm service and its per-job partner as one service, each request run once."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import anyio
import pytest

from oscar_sd import GenerationRequest, OscarSD, OscarSDError, Progress, Stage, doctor
from oscar_sd._claims import is_spilled, spill_claim
from oscar_sd._cluster import OscarCluster
from oscar_sd._service_paths import spill_partner
from oscar_sd._spill import SpillOver
from oscar_sd._spill_connect import connect_backend
from oscar_sd._warm_control import WarmControl
from oscar_sd.cli import main
from oscar_sd.cli._warm import _auto as auto
from oscar_sd.service.warm import WarmWorker
from oscar_sd.ui.progress import stage_text
from tests.double import ClusterDouble, services
from tests.double.capacity import Capacity, Timing
from tests.helpers import until
from tests.spill_fixtures import PER_JOB, connect_spill, deploy_pair
from tests.warm_fixtures import WARM, ThreadReplica, deploy_warm, warm_settings


def request(n: int) -> GenerationRequest:
    return GenerationRequest(prompt=f"a lighthouse, take {n}", seed=n, width=64, height=64,
                             num_images=1)


def fingerprint_ok(result, n: int) -> bool:  # type: ignore[no-untyped-def]
    expected = services.expected_png_fingerprint(f"a lighthouse, take {n}", n, 1)
    return services.png_fingerprint(result.images[0].read_bytes()) == expected


@asynccontextmanager
async def fast_pair(replicas: list[WarmWorker],
                    time_scale: float = 0.002) -> AsyncIterator[ClusterDouble]:
    """The pair on a double whose generation takes 1 model-second (2 ms real by default),
    two warm replicas up: a burst grows the replicas' queue past the bound."""
    capacity = Capacity(Timing(pod_start=100, model_load=50, generation=1,
                               time_scale=time_scale), gpus=8)
    with ClusterDouble(capacity=capacity) as double:
        deploy_pair(double, min_scale=2, replicas=replicas)
        assert await anyio.to_thread.run_sync(double.exposed[WARM].wait_available, 2, 60)
        yield double


@pytest.mark.anyio
async def test_a_burst_spills_and_each_request_runs_exactly_once() -> None:
    """200 requests at once on two warm replicas: those the replicas cannot start within
    the bound go per-job, claimed first; the replicas and the jobs together run each
    request exactly once, with its own images."""
    replicas: list[WarmWorker] = []
    async with fast_pair(replicas) as double:
        routes: dict[int, set[str]] = {}
        async with connect_spill(double, spill_after=0.02) as spill:
            async def one(n: int) -> None:
                def heard(progress: Progress) -> None:
                    if progress.route:
                        routes.setdefault(n, set()).add(progress.route)
                result = await spill.generate(request(n), heard)
                assert fingerprint_ok(result, n), n

            async with anyio.create_task_group() as tasks:
                for n in range(200):
                    tasks.start_soon(one, n)
            stats = spill.stats

    warm_runs: Counter[str] = Counter()
    for replica in replicas:
        warm_runs.update(replica.stats.generated)
    job_inputs = Counter(job.input_name.split(".")[0] for job in double.jobs(PER_JOB).values())
    assert max(warm_runs.values()) == 1 and max(job_inputs.values()) == 1
    assert not set(warm_runs) & set(job_inputs), "a request ran on both paths"
    assert sum(warm_runs.values()) + sum(job_inputs.values()) == 200
    assert stats.warm == sum(warm_runs.values()) and stats.per_job == sum(job_inputs.values())
    assert stats.warm > 0 and stats.spilled_late > 0, stats
    per_job = {n for n, seen in routes.items() if "per-job" in seen}
    assert len(per_job) == stats.per_job  # the progress said which path ran it


@pytest.mark.anyio
async def test_people_signed_in_apart_share_one_line_and_a_burst_of_theirs_spills() -> None:
    """The page opens one client per sign-in. Thirty people each clicking once are one
    line on the warm service, not thirty lines of one: their burst spills too."""
    replicas: list[WarmWorker] = []
    # 10 ms a generation: thirty requests are a line even on a busy machine.
    async with fast_pair(replicas, time_scale=0.01) as double:
        async with AsyncExitStack() as stack:
            people = [await stack.enter_async_context(connect_spill(double, spill_after=0.02))
                      for _ in range(30)]
            assert len({id(person.queue) for person in people}) == 1

            places: dict[int, list[int]] = {}

            async def one(n: int) -> None:
                def heard(progress: Progress) -> None:
                    if progress.stage is Stage.WAITING and progress.route == "warm":
                        places.setdefault(n, []).append(progress.queue_position or 0)
                assert fingerprint_ok(await people[n].generate(request(n), heard), n), n

            async with anyio.create_task_group() as tasks:
                for n in range(30):
                    tasks.start_soon(one, n)
            spilled = sum(person.stats.spilled_late for person in people)
            per_job = sum(person.stats.per_job for person in people)
    warm_runs: Counter[str] = Counter()
    for replica in replicas:
        warm_runs.update(replica.stats.generated)
    job_inputs = Counter(job.input_name.split(".")[0] for job in double.jobs(PER_JOB).values())
    assert spilled > 0, "nobody's request spilled: each client saw a line of its own"
    # Waiting people heard their place in the one line, and heard it move.
    assert any(heard[0] > heard[-1] for heard in places.values()), places
    assert per_job == sum(job_inputs.values())
    assert not set(warm_runs) & set(job_inputs), "a request ran on both paths"
    assert sum(warm_runs.values()) + sum(job_inputs.values()) == 30


@pytest.mark.anyio
async def test_a_stopped_warm_service_starts_on_demand_per_job_serving_meanwhile() -> None:
    capacity = Capacity(Timing(pod_start=20, model_load=10, generation=1, time_scale=0.01),
                        gpus=4)
    with ClusterDouble(capacity=capacity) as double:
        deploy_pair(double, min_scale=1)
        deployment = double.exposed[WARM]
        deployment.stop()
        assert await anyio.to_thread.run_sync(deployment.wait_stopped, 30)
        async with connect_spill(double) as spill:
            # Connecting is a sign-in: the stopped service was asked to start.
            assert spill.control.starts == 1
            routes: list[str | None] = []
            result = await spill.generate(request(1), lambda p: routes.append(p.route))
            assert fingerprint_ok(result, 1)
            assert set(routes) == {"per-job"} and spill.stats.per_job == 1
            assert await anyio.to_thread.run_sync(deployment.wait_available, 1, 30)
            routes.clear()
            await spill.generate(request(2), lambda p: routes.append(p.route))
            assert set(routes) == {"warm"} and spill.stats.warm == 1


@pytest.mark.anyio
async def test_the_idle_stop() -> None:
    capacity = Capacity(Timing(pod_start=1, model_load=1, generation=1, time_scale=0.01),
                        gpus=4)
    with ClusterDouble(capacity=capacity) as double:
        deploy_pair(double, min_scale=1)
        deployment = double.exposed[WARM]
        assert await anyio.to_thread.run_sync(deployment.wait_available, 1, 30)
        async with connect_spill(double, idle_stop=0.3) as spill:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(spill.control.run)
                await spill.generate(request(1))
                assert spill.stats.warm == 1
                assert await anyio.to_thread.run_sync(deployment.wait_stopped, 30)
                while spill.control.state.state != "stopped":
                    await spill.control.wait_changed()
                tasks.cancel_scope.cancel()
            assert spill.control.stops == 1
            assert capacity.pool.in_use == 0  # the replica's GPU is free again


@pytest.mark.anyio
@pytest.mark.parametrize("version", ["3.6.5", "4.0.0"])
async def test_a_cluster_without_stop_and_start(version: str) -> None:
    """Before v4.1.0 OSCAR has no stop/start: the warm service keeps its min_scale,
    requests go warm, and asking to stop says why it cannot."""
    with ClusterDouble(oscar_version=version) as double:
        deploy_pair(double, min_scale=1)
        assert await anyio.to_thread.run_sync(double.exposed[WARM].wait_available, 1, 30)
        async with connect_spill(double) as spill:
            assert not spill.control.state.can_stop_start and spill.control.ready
            await spill.generate(request(1))
            assert spill.stats.warm == 1 and spill.stats.per_job == 0
            with pytest.raises(OscarSDError, match="min_scale"):
                await spill.control.stop()
        assert double.exposed[WARM].available == 1


def test_the_command_line_stops_and_starts_the_warm_service(monkeypatch, capsys) -> None:
    with ClusterDouble() as double:
        deploy_pair(double, min_scale=1)
        deployment = double.exposed[WARM]
        assert deployment.wait_available(1, 30)
        monkeypatch.setenv("OSCAR_SD_PASSWORD", "oscar-pw")
        where = ["--endpoint", double.oscar_endpoint, "--user", "oscar"]
        assert main(["warm", "stop", *where]) == 0
        assert "stopped, 0 replica(s) ready" in capsys.readouterr().out
        assert deployment.wait_stopped(30)
        assert main(["warm", "start", *where]) == 0
        assert deployment.wait_available(1, 30)
        assert main(["warm", "status", "--json", *where]) == 0
        out = capsys.readouterr().out.splitlines()[-1]
        assert '"state": "ready"' in out and '"ready_replicas": 1' in out


def test_one_deploy_puts_the_pair_on_the_cluster(monkeypatch, capsys) -> None:
    """`oscar-sd deploy --pair`: the per-job service and the warm one naming it as its
    partner, with the same image and model."""
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    monkeypatch.setenv("OSCAR_SD_PASSWORD", "oscar-pw")
    with ClusterDouble() as double:
        code = main(["deploy", "--pair", "--use-root-keys", "--wait", "30",
                     "--endpoint", double.oscar_endpoint, "--user", "oscar"])
        assert code == 0, capsys.readouterr().err
        warm = double.runner.services[WARM].definition
        per_job = double.runner.services[PER_JOB].definition
    assert spill_partner(warm) == PER_JOB
    assert warm["image"] == per_job["image"]
    model = "OSCAR_SD_MODEL"
    assert warm["environment"]["variables"][model] == per_job["environment"]["variables"][model]


@pytest.mark.anyio
async def test_the_app_connects_a_warm_service_with_a_partner_as_a_pair() -> None:
    with ClusterDouble() as double:
        deploy_pair(double, min_scale=1)
        where = {"user": "oscar", "password": "oscar-pw"}
        async with connect_backend(double.oscar_endpoint, service=WARM, **where) as backend:
            assert isinstance(backend, SpillOver) and backend.per_job.service == PER_JOB
        async with connect_backend(double.oscar_endpoint, service=PER_JOB, **where) as plain:
            assert isinstance(plain, OscarSD)
        double.remove_service(PER_JOB)  # the warm service deployed alone works alone
        async with connect_backend(double.oscar_endpoint, service=WARM, **where) as alone:
            assert isinstance(alone, OscarSD) and alone.service == WARM


def test_the_page_says_which_path_runs_a_request() -> None:
    waiting = Progress(Stage.WAITING, "Waiting for a GPU (a per-job job: the warm service "
                       "is starting)", route="per-job")
    assert stage_text(waiting).endswith("· per-job GPU job")
    assert "warm service is starting" in stage_text(waiting)
    assert stage_text(Progress(Stage.RUNNING, "Running on the GPU", route="warm")) == (
        "Running on the GPU · warm replica")
    in_line = Progress(Stage.WAITING, "Waiting for a GPU", queue_position=3, route="warm")
    assert stage_text(in_line) == "Waiting for a GPU · 3 ahead of you · warm replica"


@pytest.mark.anyio
async def test_a_replica_never_takes_over_a_spilled_request() -> None:
    """The app's claim on a request it handed to the per-job path never expires: a
    replica that finds the input (and takes every other claim as expired) leaves it."""
    with ClusterDouble() as double:
        deploy_warm(double)
        double.put_object(WARM, "in/c0ffee.json",
                          json.dumps(request(1).to_payload()).encode())
        double.put_object(WARM, "out/c0ffee.started.json", spill_claim(PER_JOB))
        stats = None
        with ThreadReplica(warm_settings(double, "replica-a", claim_ttl=0.0)) as replica:
            stats = replica.worker.stats
            await until(lambda: stats.claims_lost >= 2 or bool(stats.generated), 30,
                        "two looks at the spilled request")
        assert not stats.generated, "a replica ran a request the per-job path holds"
        assert is_spilled(double.get_object(WARM, "out/c0ffee.started.json"))


@pytest.mark.anyio
async def test_warm_auto_starts_on_a_request_and_stops_when_idle() -> None:
    """`oscar-sd warm auto`: a request landing in the per-job input folder starts the
    stopped warm service; nothing more for --idle-stop seconds stops it again."""
    with ClusterDouble() as double:
        deploy_pair(double, min_scale=1)
        deployment = double.exposed[WARM]
        deployment.stop()
        assert await anyio.to_thread.run_sync(deployment.wait_stopped, 30)
        cluster = OscarCluster(double.oscar_endpoint, user="oscar", password="oscar-pw")
        control = WarmControl(cluster, WARM, idle_stop=0.5, check_interval=0.01)
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(auto, control, cluster, WARM, False)
            await until(lambda: double.listen_connections >= 2, 30, "both folders watched")
            double.put_object(PER_JOB, "in/c0ffee.json",
                              json.dumps(request(1).to_payload()).encode())
            assert await anyio.to_thread.run_sync(deployment.wait_available, 1, 30)
            assert await anyio.to_thread.run_sync(deployment.wait_stopped, 30)
            tasks.cancel_scope.cancel()
        assert control.starts == 1 and control.stops == 1


@pytest.mark.anyio
async def test_doctor_checks_both_services_of_the_pair() -> None:
    with ClusterDouble() as double:
        deploy_pair(double, min_scale=1)
        assert await anyio.to_thread.run_sync(double.exposed[WARM].wait_available, 1, 30)
        where = {"user": "oscar", "password": "oscar-pw", "service": WARM,
                 "test_request": False}
        report = await doctor(double.oscar_endpoint, **where)
        pair = next(check for check in report.checks if check.name == "spill-over pair")
        assert pair.status == "ok" and "warm on demand" in pair.detail, report.text()
        double.runner.services[PER_JOB].definition["image"] = "elsewhere/other:1"
        report = await doctor(double.oscar_endpoint, **where)
        pair = next(check for check in report.checks if check.name == "spill-over pair")
        assert pair.status == "fail" and "elsewhere/other:1" in pair.detail
        assert "deploy --pair" in pair.fix
