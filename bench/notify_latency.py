"""How fast does a finished result wake its request? Notifications against polling.

Against the cluster double on loopback, this measures the time from an output
object's PUT completing (the double's write hook) to the awaitable of its
request resolving, with 1, 100 and 1,000 requests in flight. The requests in
flight stay pending for the whole run, and a sample of extra requests have
their results written one after another through the real S3 API.

The baseline, in the same run, is the polling client the design replaces: it
lists the output folder every second and resolves what it finds.

Run: .venv/bin/python bench/notify_latency.py [--samples 200]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

import anyio
import anyio.abc
import anyio.to_thread

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from oscar_sd._hub import NotificationHub, StreamAddress, close_all_hubs, get_hub
from oscar_sd._storage import MinioStorage
from tests.double import ClusterDouble

BUCKET, PREFIX = "bench", "out/"
POLL_INTERVAL = 1.0


def rss_mb() -> float:
    """The process's resident memory now (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


class Clock:
    """When each object's write completed, as the double reports it."""

    def __init__(self) -> None:
        self.created: dict[str, float] = {}

    def __call__(self, bucket: str, key: str, when: float) -> None:
        self.created[key] = when


def write_samples(storage: MinioStorage, keys: list[str]) -> None:
    """PUT each sample result through the S3 API, one after another."""
    for key in keys:
        storage.put(BUCKET, key, b"result", "application/zip")


async def notified(
    cluster: ClusterDouble,
    hub: NotificationHub,
    storage: MinioStorage,
    clock: Clock,
    in_flight: int,
    samples: int,
    tag: str,
) -> tuple[list[float], int, float]:
    """Latencies (s) through the hub, listen connections seen, RSS growth (MB)."""
    rss_before = rss_mb()
    background = [
        await hub.expect({f"{PREFIX}{tag}-idle-{i}.zip"}) for i in range(max(0, in_flight - 1))
    ]
    sample_keys = [f"{PREFIX}{tag}-{i}.zip" for i in range(samples)]
    resolved_at: dict[str, float] = {}

    async def await_one(key: str, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        waiter = await hub.expect({key})
        task_status.started()
        await waiter.wait()
        resolved_at[key] = time.perf_counter()
        hub.discard(waiter)

    connections = 0
    async with anyio.create_task_group() as tasks:
        for key in sample_keys:
            await tasks.start(await_one, key)  # returns once the waiter is registered
        rss_growth = rss_mb() - rss_before
        writer = threading.Thread(target=write_samples, args=(storage, sample_keys))
        writer.start()
        connections = cluster.listen_connections
        await anyio.to_thread.run_sync(writer.join)
    for waiter in background:
        hub.discard(waiter)
    return [resolved_at[key] - clock.created[key] for key in sample_keys], connections, rss_growth


async def polled(
    storage: MinioStorage, clock: Clock, in_flight: int, samples: int, tag: str
) -> list[float]:
    """The baseline: list the folder every second, resolve what is there."""
    pending = {f"{PREFIX}{tag}-idle-{i}.zip" for i in range(max(0, in_flight - 1))}
    sample_keys = [f"{PREFIX}{tag}-{i}.zip" for i in range(samples)]
    pending.update(sample_keys)
    resolved_at: dict[str, float] = {}
    writer = threading.Thread(target=write_samples, args=(storage, sample_keys))
    writer.start()
    while not all(key in resolved_at for key in sample_keys):
        listed = await anyio.to_thread.run_sync(lambda: set(storage.list_keys(BUCKET, PREFIX)))
        now = time.perf_counter()
        for key in pending & listed:
            resolved_at.setdefault(key, now)
        await anyio.sleep(POLL_INTERVAL)  # the polling interval is what is being measured
    await anyio.to_thread.run_sync(writer.join)
    return [resolved_at[key] - clock.created[key] for key in sample_keys]


async def main(samples: int, levels: list[int]) -> None:
    clock = Clock()
    with ClusterDouble() as cluster:
        cluster.make_bucket(BUCKET)
        cluster.on_object_created = clock
        storage = MinioStorage(
            cluster.minio_endpoint,
            cluster.minio_access_key,
            cluster.minio_secret_key,
            region="us-east-1",
        )
        hub = get_hub(StreamAddress(storage.endpoint, BUCKET, PREFIX), storage)
        # Warm up the connections and code paths first; the first row would
        # otherwise carry the process's cold start.
        await notified(cluster, hub, storage, clock, 1, 20, "warm-up")
        rows = []
        for in_flight in levels:
            tag = f"n{in_flight}"
            latencies, connections, growth = await notified(
                cluster, hub, storage, clock, in_flight, samples, tag
            )
            baseline = await polled(storage, clock, in_flight, samples, f"poll-{tag}")
            rows.append((in_flight, latencies, baseline, connections, growth))
        connects_total = cluster.listen_connects_total
        await anyio.to_thread.run_sync(close_all_hubs)

    print(
        f"notification latency: PUT complete -> awaitable resolved, {samples} samples a row"
        " (after 20 warm-up samples)"
    )
    print(
        f"(2-core machine, cluster double on loopback; baseline lists the folder every "
        f"{POLL_INTERVAL:g} s)\n"
    )
    header = (
        f"{'in flight':>9} | {'client':<12} | {'p50 ms':>8} | {'p95 ms':>8} | "
        f"{'p99 ms':>8} | {'listen conns':>12} | {'RSS growth MB':>13}"
    )
    print(header)
    print("-" * len(header))
    for in_flight, latencies, baseline, connections, growth in rows:
        for name, values, conns, rss in (
            ("notify", latencies, str(connections), f"{growth:.1f}"),
            ("poll 1 s", baseline, "0", "-"),
        ):
            print(
                f"{in_flight:>9} | {name:<12} | {percentile(values, 50) * 1000:>8.2f} | "
                f"{percentile(values, 95) * 1000:>8.2f} | {percentile(values, 99) * 1000:>8.2f}"
                f" | {conns:>12} | {rss:>13}"
            )
        ratio = statistics.median(baseline) / statistics.median(latencies)
        print(f"{'':>9} | {'p50 ratio':<12} | polling is {ratio:.0f}x slower than notifications")
    print(f"\nlisten connections opened in the whole run: {connects_total}")
    print(f"peak RSS of the process (client + double): {peak_rss_mb():.1f} MB")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 100, 1000])
    arguments = parser.parse_args()
    anyio.run(main, arguments.samples, arguments.levels)
