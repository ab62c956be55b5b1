"""From a result landing to the images in the caller's hands: OscarSD.generate end to end.

The cluster double runs in its own process (``python -m tests.double.serve``),
so its CPU is not counted as the client's. Each row drives N requests through
the whole path (upload, wait, download, unpack, delete) and reports:

- landing -> caller p50/p99: from the moment the double stored a request's
  result to the moment that request's caller had its images;
- in two modes: ``burst`` (jobs held until every request uploaded, then all
  released at once) and ``jobs 1-3s`` (each job takes a random 1-3 s);
- client CPU per request (the whole process: event loop, hub and worker
  threads), storage connections and requests the double saw, RSS growth per
  request in flight.

Baselines in the same run, each the same upload/download/unpack/delete with a
different way of waiting, each given its best chance:
- ``poll stat``: every request calls stat_object every second, random phase;
- ``poll list``: one shared task lists the folder every second, random phase;
- ``stream/req``: the original app: one listen_bucket_notification per request
  (a thread each), capped at ``--stream-cap`` requests, where it collapses.

Run: .venv/bin/python bench/notify_latency.py [--sizes 10 100 1000 5000]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from oscar_sd import GenerationRequest, OscarSD, Progress, Stage
from oscar_sd._storage import MinioStorage
from oscar_sd._unpack import unpack_images

POLL_INTERVAL = 1.0
NUM_IMAGES = 6


# -- the double in its own process ---------------------------------------------------


class Double:
    """The cluster double's process, driven by one-line commands."""

    def __init__(self) -> None:
        root = Path(__file__).resolve().parents[1]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.double.serve"], cwd=root, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        )
        self.info = json.loads(self._readline())
        self._lock = threading.Lock()

    def _readline(self) -> str:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("the cluster double's process ended")
        return line

    def ask(self, command: str) -> Any:
        assert self.process.stdin is not None
        with self._lock:
            self.process.stdin.write(command + "\n")
            self.process.stdin.flush()
            return json.loads(self._readline())

    def close(self) -> None:
        try:
            self.ask("quit")
        except (RuntimeError, BrokenPipeError, ValueError):
            pass
        self.process.wait(timeout=30)


# -- measuring ---------------------------------------------------------------------------


def rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


@dataclass
class Row:
    client: str
    mode: str
    n: int
    latencies: list[float]
    cpu_ms: float
    connections: int
    requests: int
    rss_kb_per_request: float
    wall: float
    note: str = ""

    def cells(self) -> str:
        if not self.latencies:
            return (f"{self.client:<11} | {self.mode:<9} | {self.n:>5} | {'-':>8} | {'-':>8} | "
                    f"{'-':>7} | {'-':>6} | {'-':>7} | {'-':>8} | {'-':>6} | {self.note}")
        p50, p99 = percentile(self.latencies, 50) * 1000, percentile(self.latencies, 99) * 1000
        return (f"{self.client:<11} | {self.mode:<9} | {self.n:>5} | {p50:>8.1f} | {p99:>8.1f} | "
                f"{self.cpu_ms:>7.2f} | {self.connections:>6} | {self.requests:>7} | "
                f"{self.rss_kb_per_request:>8.1f} | {self.wall:>6.1f} | {self.note}")


HEADER = (f"{'client':<11} | {'mode':<9} | {'n':>5} | {'p50 ms':>8} | {'p99 ms':>8} | "
          f"{'CPU ms/r':>7} | {'conns':>6} | {'S3 reqs':>7} | {'RSS KB/r':>8} | {'wall s':>6} | "
          "note")


# -- one run: N requests, burst or 1-3 s jobs ------------------------------------------------


Generate = Callable[[int, Callable[[], None]], Awaitable[str]]  # -> job id


async def run(double: Double, client: str, mode: str, n: int, generate: Generate,
              *, before_release: Callable[[], Awaitable[None]] | None = None,
              sd: OscarSD | None = None) -> Row:
    """Drive ``n`` requests through ``generate``; measure from landing to the caller."""
    # Start clean: the previous row's background deletions have finished.
    with anyio.fail_after(120):
        while double.ask("objects"):  # noqa: ASYNC110 (state of another process)
            await anyio.sleep(0.1)
    stats_before = _paths(sd)
    fetch_seconds.clear()
    dropped_before = double.ask("dropped")
    double_cpu_before = double.ask("cpu")
    double.ask("landed")
    double.ask("counters")
    if mode == "burst":
        double.ask("hold")
        double.ask("delay 0 0")
    else:
        double.ask("delay 1 3")
    uploaded = 0
    all_uploaded = anyio.Event()
    done_at: dict[str, float] = {}
    failures: list[BaseException] = []

    def on_uploaded() -> None:
        nonlocal uploaded
        uploaded += 1
        if uploaded == n:
            all_uploaded.set()

    async def one(index: int) -> None:
        try:
            job = await generate(index, on_uploaded)
            done_at[job] = time.perf_counter()
        except Exception as exc:  # counted and reported, never hidden
            failures.append(exc)
            if uploaded < n:
                on_uploaded()

    rss_before, cpu_before, started = rss_kb(), cpu_seconds(), time.perf_counter()
    peak_rss = rss_before
    async with anyio.create_task_group() as tasks:
        for index in range(n):
            tasks.start_soon(one, index)
        await all_uploaded.wait()
        if before_release is not None:
            await before_release()
        peak_rss = max(peak_rss, rss_kb())
        if mode == "burst":
            double.ask("release")
    wall = time.perf_counter() - started
    cpu = cpu_seconds() - cpu_before
    landed = double.ask("landed")
    counters = double.ask("counters")
    latencies = [done_at[job] - landed[f"out/{job}.zip"] for job in done_at]
    note = f"{len(failures)} failed ({type(failures[0]).__name__}); " if failures else ""
    note += f"double CPU {(double.ask('cpu') - double_cpu_before) / n * 1000:.1f} ms/r; "
    if sd is not None and fetch_seconds:
        note += f"fetch+unpack p50 {statistics.median(fetch_seconds) * 1000:.1f} ms; "
        fetch_seconds.clear()
    if sd is not None:
        paths = [after - before for after, before in zip(_paths(sd), stats_before, strict=True)]
        note += (f"found by event {paths[0]}, catch-up {paths[1]}, reconciliation {paths[2]}; "
                 f"events dropped {double.ask('dropped') - dropped_before}")
    return Row(client, mode, n, latencies, cpu / n * 1000, counters["connections"],
               sum(counters["requests"].values()), (peak_rss - rss_before) / n, wall, note)


def _paths(sd: OscarSD | None) -> tuple[int, int, int]:
    if sd is None:
        return (0, 0, 0)
    stats = sd._hub.stats
    return (stats.resolved_by_event, stats.caught_up, stats.reconciled)


# -- the library ---------------------------------------------------------------------------

#: Per request, from the waiter resolving to the images written (download + unpack + tidy).
fetch_seconds: list[float] = []



def library(sd: OscarSD) -> Generate:
    async def generate(index: int, on_uploaded: Callable[[], None]) -> str:
        def progress(update: Progress) -> None:
            if update.stage is Stage.UPLOADED:
                on_uploaded()

        request = GenerationRequest(prompt=f"bench {index}", seed=index, num_images=NUM_IMAGES)
        result = await sd.generate(request, progress)
        fetch_seconds.append(result.timings.download)
        return result.job_id

    return generate


# -- the baselines: same upload, download, unpack and delete; another way to wait -------------


class Baseline:
    """What a client without the hub does; ``wait`` is the strategy being compared."""

    def __init__(self, double: Double, results: Path) -> None:
        info = double.info
        self.storage = MinioStorage(info["minio_endpoint"], info["access_key"],
                                    info["secret_key"], pool_size=64)
        self.bucket = info["bucket"]
        self.results = results
        self.limiter = anyio.CapacityLimiter(40)  # anyio's default size

    async def thread(self, function: Callable[..., Any], *args: Any) -> Any:
        return await anyio.to_thread.run_sync(function, *args, limiter=self.limiter)

    def generate(self, wait: Callable[[str], Awaitable[None]]) -> Generate:
        async def generate(index: int, on_uploaded: Callable[[], None]) -> str:
            job = uuid.uuid4().hex
            request = GenerationRequest(prompt=f"bench {index}", seed=index,
                                        num_images=NUM_IMAGES)
            body = json.dumps(request.to_payload()).encode()
            await self.thread(self.storage.put, self.bucket, f"in/{job}.json", body,
                              "application/json")
            on_uploaded()
            key = f"out/{job}.zip"
            await wait(key)
            data = await self.thread(self.storage.get, self.bucket, key)
            directory = self.results / job
            directory.mkdir()
            await self.thread(unpack_images, data, directory)
            await self.thread(self.storage.remove, self.bucket, [f"in/{job}.json", key])
            return job

        return generate


def stat_poller(base: Baseline) -> Generate:
    async def wait(key: str) -> None:
        await anyio.sleep(random.uniform(0, POLL_INTERVAL))  # random phase
        while True:
            try:
                await base.thread(base.storage._client.stat_object, base.bucket, key)
                return
            except Exception:
                await anyio.sleep(POLL_INTERVAL)

    return base.generate(wait)


def list_poller(base: Baseline, stop: anyio.Event) -> tuple[Generate, Callable[[], Any]]:
    pending: dict[str, anyio.Event] = {}

    async def lister() -> None:
        await anyio.sleep(random.uniform(0, POLL_INTERVAL))  # random phase
        while not stop.is_set():
            listed = await base.thread(lambda: set(base.storage.list_keys(base.bucket, "out/")))
            for key in listed & set(pending):
                pending.pop(key).set()
            with anyio.move_on_after(POLL_INTERVAL):
                await stop.wait()

    async def wait(key: str) -> None:
        pending[key] = event = anyio.Event()
        await event.wait()

    return base.generate(wait), lister


def stream_per_request(base: Baseline, double: Double) -> Generate:
    """The original app: its own blocking listen stream per request, in its own thread."""
    from minio import Minio

    info = double.info
    client = Minio(info["minio_endpoint"].split("://")[1], info["access_key"],
                   info["secret_key"], secure=False)

    def listen(key: str) -> None:
        with client.listen_bucket_notification(base.bucket, prefix=key,
                                               events=["s3:ObjectCreated:*"]) as events:
            for event in events:
                for record in event.get("Records") or []:
                    if record["s3"]["object"]["key"] in (key, key.replace("/", "%2F")):
                        return

    async def wait(key: str) -> None:
        # Its best chance: the stream is opened before the job can finish (jobs
        # are held, or take at least 1 s), on a thread of its own.
        await anyio.to_thread.run_sync(listen, key, limiter=anyio.CapacityLimiter(1))

    return base.generate(wait)


# -- the run ---------------------------------------------------------------------------------


async def main(arguments: argparse.Namespace) -> None:
    double = Double()
    rows: list[Row] = []
    try:
        info = double.info
        results = Path(tempfile.mkdtemp(prefix="oscar-sd-bench-"))
        async with OscarSD.connect(
            info["oscar_endpoint"], user=info["user"], password=info["password"],
            results_dir=results, timeout=600, storage_threads=arguments.storage_threads,
        ) as sd:
            await run(double, "warm-up", "burst", 20, library(sd))
            for n in arguments.sizes:
                for mode in arguments.modes:
                    rows.append(await run(double, "oscar_sd", mode, n, library(sd), sd=sd))
                    print(rows[-1].cells(), flush=True)
        base = Baseline(double, results)
        for n in arguments.baseline_sizes:
            for mode in arguments.modes:
                rows.append(await run(double, "poll stat", mode, n, stat_poller(base)))
                print(rows[-1].cells(), flush=True)
                stop = anyio.Event()
                generate, lister = list_poller(base, stop)
                async with anyio.create_task_group() as tasks:
                    tasks.start_soon(lister)
                    rows.append(await run(double, "poll list", mode, n, generate))
                    stop.set()
                print(rows[-1].cells(), flush=True)
                if n <= arguments.stream_cap:

                    async def all_listening(n: int = n) -> None:
                        # A held burst is released only once every stream is open.
                        with anyio.fail_after(60):
                            while double.ask("listeners") < n:  # noqa: ASYNC110 (another process)
                                await anyio.sleep(0.05)

                    rows.append(await run(double, "stream/req", mode, n,
                                          stream_per_request(base, double),
                                          before_release=all_listening))
                else:
                    rows.append(Row("stream/req", mode, n, [], 0, 0, 0, 0, 0,
                                    f"not run: capped at {arguments.stream_cap} (a thread and a "
                                    "connection per request; collapses past that)"))
                print(rows[-1].cells(), flush=True)
    finally:
        double.close()

    print("\nlanding -> images in the caller's hands; OscarSD.generate end to end, the double in "
          f"its own process; {os.cpu_count()} cores; {NUM_IMAGES} images a request")
    print(f"burst: jobs held until all uploaded, then released at once; jobs: 1-3 s each; "
          f"pollers every {POLL_INTERVAL:g} s with random phase\n")
    print(HEADER)
    print("-" * len(HEADER))
    for row in rows:
        print(row.cells())
    print("\nratios of p50 / p99 latency against oscar_sd (higher: oscar_sd is faster)")
    ours = {(r.mode, r.n): r for r in rows if r.client == "oscar_sd"}
    for row in rows:
        mine = ours.get((row.mode, row.n))
        if row.client == "oscar_sd" or mine is None or not row.latencies or not mine.latencies:
            continue
        p50 = statistics.median(row.latencies) / max(statistics.median(mine.latencies), 1e-9)
        p99 = percentile(row.latencies, 99) / max(percentile(mine.latencies, 99), 1e-9)
        print(f"  {row.client:<11} {row.mode:<9} n={row.n:<5} p50 {p50:7.1f}x   p99 {p99:7.1f}x"
              f"   CPU/req {row.cpu_ms / max(mine.cpu_ms, 1e-9):5.1f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1000, 5000])
    parser.add_argument("--baseline-sizes", type=int, nargs="*", default=[10, 100, 1000])
    parser.add_argument("--modes", nargs="+", default=["burst", "jobs"],
                        choices=["burst", "jobs"])
    parser.add_argument("--stream-cap", type=int, default=100)
    parser.add_argument("--storage-threads", type=int, default=16)
    anyio.run(main, parser.parse_args())
