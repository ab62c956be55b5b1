"""A warm replica tells the app its steps through objects, and stops a cancelled request."""

from __future__ import annotations

from collections.abc import Iterator

import anyio
import pytest

from oscar_sd import GenerationRequest, Progress, Stage
from tests.double import ClusterDouble
from tests.helpers import until
from tests.warm_fixtures import (
    WARM,
    ResultLog,
    ThreadReplica,
    connect_warm,
    warm_cluster,
    warm_settings,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def double() -> Iterator[ClusterDouble]:
    with warm_cluster() as cluster:
        yield cluster


def leftovers(double: ClusterDouble, job: str) -> list[str]:
    return [key for key in double.list_keys(WARM) if job in key]


async def test_the_page_hears_the_steps_of_a_warm_replica(double: ClusterDouble) -> None:
    log = ResultLog(double)
    reports: list[Progress] = []
    settings = warm_settings(double, "replica-a", progress_interval=0.02)
    with ThreadReplica(settings), anyio.fail_after(300):
        async with connect_warm(double, timeout=300) as client:
            result = await client.generate(
                GenerationRequest(prompt="a slow fox", seed=1, width=64, height=64,
                                  num_images=1, steps=40),
                on_progress=reports.append,
            )
    steps = [(p.step, p.total_steps) for p in reports if p.step is not None]
    assert steps and all(total == 40 for _, total in steps)
    assert [step for step, _ in steps] == sorted({step for step, _ in steps})  # onwards only
    assert all(p.stage is Stage.RUNNING for p in reports if p.step is not None)
    progress_key = f"out/{result.job_id}.progress.json"
    assert log.written[progress_key] >= 1
    await until(lambda: not leftovers(double, result.job_id), 10, "objects left behind")


async def test_cancel_stops_a_running_request_at_its_next_step(double: ClusterDouble) -> None:
    heard: list[Progress] = []
    stepping = anyio.Event()

    def on_progress(progress: Progress) -> None:
        heard.append(progress)
        if progress.step is not None:
            stepping.set()

    slow = GenerationRequest(prompt="a very slow fox", seed=1, width=128, height=128,
                             num_images=1, steps=150)
    settings = warm_settings(double, "replica-a", progress_interval=0.05)
    with ThreadReplica(settings) as replica, anyio.fail_after(300):
        async with connect_warm(double, timeout=300) as client:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(client.generate, slow, on_progress)
                await stepping.wait()
                tasks.cancel_scope.cancel()
            stats = replica.worker.stats
            await until(lambda: stats.cancelled_calls == 1, 30, "the call did not stop")
            assert max(p.step or 0 for p in heard) < 150
            # The replica is free at once: the next request runs.
            after = await client.generate(GenerationRequest(prompt="next", width=64, height=64,
                                                            num_images=1, steps=2))
    assert len(after.images) == 1
    (job,) = [j for j in stats.generated if j != after.job_id] or [None]
    assert job is None  # the cancelled request wrote no result
    assert not [key for key in double.list_keys(WARM) if key.endswith(".zip")]
