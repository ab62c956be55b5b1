"""The double's capacity model on its own: a bounded GPU pool, first come first served,
and the GPU-seconds it counts (what bench/capacity.py reports)."""

from __future__ import annotations

import threading

from tests.double.capacity import GpuPool, Lease, Timing
from tests.test_double import wait_for

TIMING = Timing(time_scale=0.001)


def test_pods_wait_for_a_free_gpu_in_the_order_they_asked() -> None:
    pool = GpuPool(1, TIMING)
    first = pool.acquire("first")
    assert first is not None and pool.in_use == 1
    got: list[str] = []
    leases: dict[str, Lease] = {}

    def pod(name: str) -> None:
        lease = pool.acquire(name)
        assert lease is not None
        leases[name] = lease
        got.append(name)

    waiting = []
    for asked, name in enumerate(("second", "third"), start=1):
        thread = threading.Thread(target=pod, args=(name,))
        thread.start()
        waiting.append(thread)
        wait_for(lambda asked=asked: len(pool._line) == asked)  # it asked, in this order
    assert got == [] and pool.in_use == 1  # never more pods than GPUs
    pool.release(first)
    wait_for(lambda: got == ["second"])
    assert pool.in_use == 1
    pool.release(leases["second"])
    wait_for(lambda: got == ["second", "third"])
    for thread in waiting:
        thread.join(5)
    pool.release(leases["third"])
    assert pool.in_use == 0


def test_a_stopped_pod_leaves_the_line_without_a_gpu() -> None:
    pool = GpuPool(1, TIMING)
    held = pool.acquire("held")
    stop = threading.Event()
    outcome: list[Lease | None] = []
    thread = threading.Thread(target=lambda: outcome.append(pool.acquire("gone", stop)))
    thread.start()
    wait_for(lambda: len(pool._line) == 1)
    stop.set()
    pool.wake()  # a Deployment scaled down
    thread.join(5)
    assert outcome == [None] and pool._line == []
    assert held is not None and pool.in_use == 1


def test_gpu_seconds_held_and_used() -> None:
    pool = GpuPool(2, TIMING)
    pool.leases = [Lease("job", since=0.0, until=10.0), Lease("replica", since=5.0, until=20.0)]
    assert pool.held_seconds() == 25.0
    assert pool.held_seconds(since=8.0) == 14.0  # only what falls after the dawn
    pool.generated(3.0)
    pool.generated(1.5)
    assert pool.used_seconds == 4.5
