"""The spill decision on its own: when a request leaves the warm replicas' line.

A request spills when the warm replicas would start it more than ``spill_after``
seconds from now (the requests ahead of it times the measured seconds per
result) and a per-job job would start it sooner (``_spill.py``). These tests set
the shared line's measurements directly; ``test_spill.py`` runs the rule on the
cluster double.
"""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import pytest

from oscar_sd._spill import SpillOver
from oscar_sd._spill_line import Waiting

pytestmark = pytest.mark.anyio


def spill_over(endpoint: str, *, start_seconds: float | None = None) -> SpillOver:
    """A SpillOver over stand-ins: the rule reads only names and the control's start."""
    warm: Any = SimpleNamespace(_storage=SimpleNamespace(endpoint=endpoint),
                                service="sd-warm", description="warm")
    per_job: Any = SimpleNamespace(service="sd")
    control: Any = SimpleNamespace(start_seconds=start_seconds, busy=None)
    return SpillOver(warm, per_job, control, spill_after=10.0)


def line_up(spill: SpillOver, count: int) -> list[str]:
    jobs = [f"job{n}" for n in range(count)]
    for job in jobs:
        spill.queue.waiting[job] = Waiting(job, uploaded=True)
    return jobs


async def test_nothing_spills_before_a_warm_result_is_measured() -> None:
    spill = spill_over("http://a", start_seconds=1.0)
    jobs = line_up(spill, 50)
    assert spill.expected_start(jobs[-1]) is None
    assert not spill._should_spill(jobs[-1])


async def test_a_request_spills_past_the_bound_when_a_job_would_start_it_sooner() -> None:
    spill = spill_over("http://b", start_seconds=8.0)  # the warm service's own last start
    spill.queue.gaps.extend([5.0, 5.0])
    jobs = line_up(spill, 4)
    assert [spill.expected_start(job) for job in jobs] == [0.0, 5.0, 10.0, 15.0]
    # 10 s is not past the bound; 15 s is, and a job would start in 8 s.
    assert [spill._should_spill(job) for job in jobs] == [False, False, False, True]


async def test_it_stays_when_a_job_would_start_it_later() -> None:
    spill = spill_over("http://c", start_seconds=30.0)  # pod start and model load
    spill.queue.gaps.append(5.0)
    jobs = line_up(spill, 5)
    assert spill.expected_start(jobs[-1]) == 20.0
    assert not spill._should_spill(jobs[-1])


async def test_started_requests_are_not_ahead_and_spilled_jobs_queue_for_gpus() -> None:
    spill = spill_over("http://d", start_seconds=8.0)
    spill.queue.gaps.append(5.0)
    jobs = line_up(spill, 5)
    spill.queue.waiting[jobs[0]].started = True
    assert spill.ahead_of(jobs[-1]) == 3
    # Three spilled jobs wait for a GPU, one runs at a time: a fourth starts in 4 x 8 s.
    spill.queue.most_running = 1
    now = time.monotonic()
    spill.queue.unstarted_jobs.update({"s1": now, "s2": now, "s3": now})
    assert spill.per_job_start() == pytest.approx(32.0)
    assert not spill._should_spill(jobs[-1])  # warm in 15 s beats per-job in 32 s


async def test_with_nothing_known_of_the_per_job_path_it_is_probed_a_few_at_a_time() -> None:
    spill = spill_over("http://e")
    assert spill.per_job_start() == 0.0
    spill.queue.unstarted_jobs["probe"] = time.monotonic()
    assert spill.per_job_start() == float("inf")  # one probe out: the rest wait for it
    spill.queue.most_running = 3
    assert spill.per_job_start() == 0.0  # three ran at once: up to three probes


async def test_clients_of_one_pair_share_the_line_and_other_pairs_do_not() -> None:
    one, two = spill_over("http://f"), spill_over("http://f")
    other = spill_over("http://g")
    assert one.queue is two.queue and other.queue is not one.queue
