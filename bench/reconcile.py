"""When events are not enough: connect time, silently landed results, reconciliation cost.

Against the cluster double on loopback (its listen stream behaves as MinIO's
``cmd/listen-notification-handlers.go``: nothing before the first 500 ms
keep-alive, events dropped for a slow reader), this measures

1. a cold hub to "upload allowed" (targets: <= 1 s), and a reconnect after
   the stream drops (a MinIO restart) to "upload allowed" again;
2. a result whose event is lost (it lands silently) to its request resolving,
   with 1 and 1,000 requests in flight (target: <= 10 s p99). The baseline is
   the previous hub, which found such a result only at the request's deadline
   (900 s by default);
3. reconciliation's storage requests per minute with 1, 100 and 1,000
   requests in flight and no event lost (the cost of the safety net).

Run: .venv/bin/python bench/reconcile.py [--samples 30] [--window 60] [--age 20]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import anyio
import anyio.to_thread

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from oscar_sd._notify.hub import NotificationHub, StreamAddress
from oscar_sd._storage import MinioStorage
from tests.double import ClusterDouble

BUCKET, PREFIX = "bench", "out/"
DEFAULT_TIMEOUT = 900.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def new_hub(cluster: ClusterDouble, storage: MinioStorage, tag: str) -> NotificationHub:
    address = StreamAddress(storage.endpoint, BUCKET, f"{PREFIX}{tag}/", cluster.minio_access_key)
    return NotificationHub(address, storage)


async def cold_starts(cluster: ClusterDouble, storage: MinioStorage, runs: int) -> list[float]:
    """Seconds from a hub's first request to its upload being allowed."""
    times = []
    for run in range(runs):
        hub = new_hub(cluster, storage, f"cold-{run}")
        started = time.perf_counter()
        await hub.expect({f"{PREFIX}cold-{run}/x.zip"})
        times.append(time.perf_counter() - started)
        await hub.aclose()
    return times


def wait_until(predicate, limit: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(0.001)


async def reconnects(cluster: ClusterDouble, storage: MinioStorage, runs: int) -> list[float]:
    """Seconds from a dropped stream (MinIO restart) to upload allowed again."""
    hub = new_hub(cluster, storage, "reconnect")
    await hub.expect({f"{PREFIX}reconnect/x.zip"})
    times = []
    for _ in range(runs):
        connects = hub.stats.connects
        started = time.perf_counter()
        cluster.drop_streams()
        await anyio.to_thread.run_sync(
            wait_until, lambda n=connects: hub.stats.connects > n and hub.connected
        )
        times.append(time.perf_counter() - started)
    await hub.aclose()
    return times


async def silent_landings(
    cluster: ClusterDouble, storage: MinioStorage, in_flight: int, samples: int, tag: str,
    age: float,
) -> list[float]:
    """Seconds from a result landing with its event lost to its request resolving."""
    created: dict[str, float] = {}
    cluster.on_object_created = lambda bucket, key, when: created.setdefault(key, when)
    hub = new_hub(cluster, storage, tag)
    background = [
        await hub.expect({f"{PREFIX}{tag}/idle-{i}.zip"}) for i in range(max(0, in_flight - 1))
    ]
    keys = [f"{PREFIX}{tag}/lost-{i}.zip" for i in range(samples)]
    waiters = [await hub.expect({key}) for key in keys]
    # Results come after a job has run: by then the checks are at their widest interval.
    await anyio.sleep(age)
    resolved: dict[str, float] = {}

    async def watch(key: str, index: int) -> None:
        await waiters[index].wait()
        resolved[key] = time.perf_counter()

    def write() -> None:
        for key in keys:  # spread over the schedule: each lands at another phase
            cluster.lose_next_event(key)
            storage.put(BUCKET, key, b"result", "application/zip")
            time.sleep(0.37)

    async with anyio.create_task_group() as tasks:
        for index, key in enumerate(keys):
            tasks.start_soon(watch, key, index)
        await anyio.to_thread.run_sync(write)
    assert all(w.resolved_by == "reconciliation" for w in waiters)
    for waiter in background + waiters:
        hub.discard(waiter)
    await hub.aclose()
    cluster.on_object_created = None
    return [resolved[key] - created[key] for key in keys]


async def reconcile_cost(
    cluster: ClusterDouble, storage: MinioStorage, in_flight: int, window: float
) -> tuple[int, int]:
    """Storage requests reconciliation made in ``window`` s, and requests per minute."""
    hub = new_hub(cluster, storage, f"cost-{in_flight}")
    waiters = [await hub.expect({f"{PREFIX}cost-{in_flight}/{i}.zip"}) for i in range(in_flight)]
    before = hub.stats.reconcile_requests
    await anyio.sleep(window)  # the quantity measured is what happens in this window
    made = hub.stats.reconcile_requests - before
    for waiter in waiters:
        hub.discard(waiter)
    await hub.aclose()
    return made, round(made * 60 / window)


async def main(samples: int, window: float, age: float) -> None:
    with ClusterDouble() as cluster:
        cluster.make_bucket(BUCKET)
        storage = MinioStorage(
            cluster.minio_endpoint, cluster.minio_access_key, cluster.minio_secret_key,
            region="us-east-1",
        )
        cold = await cold_starts(cluster, storage, 10)
        again = await reconnects(cluster, storage, 10)
        silent = {n: await silent_landings(cluster, storage, n, samples, f"silent-{n}", age)
                  for n in (1, 1000)}
        cost = {n: await reconcile_cost(cluster, storage, n, window) for n in (1, 100, 1000)}

    print("reconciliation and connect time (2-core machine, cluster double on loopback)\n")
    header = f"{'measure':<44} | {'p50 s':>7} | {'p95 s':>7} | {'p99 s':>7} | {'max s':>7} | target"
    print(header)
    print("-" * len(header))
    rows = [("cold hub -> upload allowed (10 runs)", cold, "<= 1 s"),
            ("stream dropped -> upload allowed (10 runs)", again, "<= 1 s")]
    for n, values in silent.items():
        rows.append((f"silent landing -> resolved, {n} in flight", values, "<= 10 s p99"))
    for name, values, target in rows:
        print(f"{name:<44} | {percentile(values, 50):>7.2f} | {percentile(values, 95):>7.2f} | "
              f"{percentile(values, 99):>7.2f} | {max(values):>7.2f} | {target}")
    worst = max(percentile(values, 99) for values in silent.values())
    print(f"\nbaseline (previous hub): a silently landed result waited for its deadline, "
          f"{DEFAULT_TIMEOUT:g} s by default: {DEFAULT_TIMEOUT / worst:.0f}x the p99 above")
    print(f"({samples} silent landings a row, one every 0.37 s, requests {age:g} s old)\n")
    header = f"{'in flight':>9} | {'requests in ' + f'{window:g} s':>16} | {'requests/minute':>15}"
    print(header)
    print("-" * len(header))
    for n, (made, per_minute) in cost.items():
        print(f"{n:>9} | {made:>16} | {per_minute:>15}")
    print("\n(storage requests made by reconciliation alone, all requests registered at once "
          "and none landing; a listing page counts as one request)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--window", type=float, default=60.0)
    parser.add_argument("--age", type=float, default=20.0, help="request age at landing (s)")
    arguments = parser.parse_args()
    anyio.run(main, arguments.samples, arguments.window, arguments.age)
