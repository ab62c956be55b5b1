"""Per-job against warm: click-to-images through ``OscarSD.generate`` on the cluster double.

Everything runs on this machine, in one run, with the tiny model on the CPU:

- per-job, script: each upload is an OSCAR job running ``manifests/script.sh``
  (a new Python process: imports, model load, generation, exit), as the double
  runs jobs the faas-supervisor way;
- per-job, in-process: each upload is a job whose handler calls the worker in
  this process (model already loaded): the per-job mode without its start-up;
- warm, 1 and 2 replicas: :class:`~oscar_sd.service.warm.WarmWorker` threads
  listening to the input folder (``--warm``), claiming with conditional PUTs.

For 1 user (requests one after another) and N concurrent users: p50/p95 of
click-to-images; the warm mode's overhead above its own generation time (1
user, 1 replica: latency minus the seconds inside ``generate_batch`` for that
request); images per second for N users with cross-user batching and without
(``max_batch_images`` 24 against 1 request per call).

    .venv/bin/python bench/warm.py                # about 5 minutes on 2 cores
    .venv/bin/python bench/warm.py --users 10 --script-rounds 0   # no script jobs

Two replicas here share one process, one model and the CPU (the pipeline lock
serialises them): the row shows the claim protocol's cost, not a second GPU.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from oscar_sd import GenerationRequest, OscarSD
from oscar_sd._notify.hub import close_all_hubs
from oscar_sd.service import load_pipeline, run_job
from tests.double import ClusterDouble, ScriptHandler
from tests.warm_fixtures import WARM, ThreadReplica, deploy_warm, warm_settings

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "manifests" / "script.sh"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def request(n: int, images: int) -> GenerationRequest:
    return GenerationRequest(prompt=f"a lighthouse at dusk, take {n}", seed=n, width=64,
                             height=64, num_images=images)


async def scenario(double: ClusterDouble, service: str, users: int, rounds: int,
                   images: int) -> tuple[list[float], float]:
    """Each of ``users`` makes ``rounds`` requests in a row: (latencies, wall seconds)."""
    async with OscarSD.connect(endpoint=double.oscar_endpoint, user="oscar",
                               password="oscar-pw", service=service, timeout=900) as client:
        await client.generate(request(999_999, images))  # the hub's stream opens: not timed
        latencies: list[float] = []

        async def user(u: int) -> None:
            for r in range(rounds):
                started = time.perf_counter()
                await client.generate(request(u * 1000 + r, images))
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        async with anyio.create_task_group() as group:
            for u in range(users):
                group.start_soon(user, u)
        wall = time.perf_counter() - started
    close_all_hubs()  # each scenario runs in an event loop of its own
    return latencies, wall


def in_process(input_file: Path, output_dir: Path) -> None:
    run_job(input_file, output_dir, model="tiny", device="cpu")


def row(label: str, users: int, latencies: list[float], wall: float, images: int) -> list[str]:
    return [label, str(users), str(len(latencies)), f"{percentile(latencies, 50):.3f}",
            f"{percentile(latencies, 95):.3f}", f"{len(latencies) * images / wall:.1f}"]


def print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    print(f"\n{title}")
    for line in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=20, help="concurrent users (default 20)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="requests per user, in a row, for N users (default 2)")
    parser.add_argument("--single-rounds", type=int, default=8,
                        help="requests of the lone user (default 8)")
    parser.add_argument("--script-rounds", type=int, default=1,
                        help="requests per user for the script.sh jobs (0: skip them)")
    parser.add_argument("--images", type=int, default=2, help="images per request (default 2)")
    args = parser.parse_args()
    load_pipeline("tiny", "cpu")  # every mode but the script one shares this model
    rows: list[list[str]] = []
    overhead: list[float] = []
    throughput: list[list[str]] = []

    with ClusterDouble() as double:
        env = {"OSCAR_SD_MODEL": "tiny", "OSCAR_SD_DEVICE": "cpu", "PYTHONPATH": str(REPO),
               "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
        double.add_service("per-job-script", input_path="per-job-script/in",
                           output_path="per-job-script/out",
                           handler=ScriptHandler(SCRIPT, env=env, timeout=600))
        double.add_service("per-job-inproc", input_path="per-job-inproc/in",
                           output_path="per-job-inproc/out", handler=in_process)
        deploy_warm(double)

        if args.script_rounds:
            script_runs = ((1, max(2, args.script_rounds)), (args.users, args.script_rounds))
            for users, rounds in script_runs:
                lat, wall = anyio.run(scenario, double, "per-job-script", users, rounds,
                                      args.images)
                rows.append(row("per-job, script.sh", users, lat, wall, args.images))
        for users, rounds in ((1, args.single_rounds), (args.users, args.rounds)):
            lat, wall = anyio.run(scenario, double, "per-job-inproc", users, rounds, args.images)
            rows.append(row("per-job, in-process", users, lat, wall, args.images))

        for replicas in (1, 2):
            settings = [warm_settings(double, f"replica-{n}", reconcile_interval=5.0)
                        for n in range(replicas)]
            running = [ThreadReplica(s) for s in settings]
            for replica in running:
                replica.__enter__()
            try:
                for users, rounds in ((1, args.single_rounds), (args.users, args.rounds)):
                    before = len(running[0].worker.stats.generate_seconds)
                    lat, wall = anyio.run(scenario, double, WARM, users, rounds, args.images)
                    rows.append(row(f"warm, {replicas} replica(s)", users, lat, wall,
                                    args.images))
                    if replicas == 1 and users == 1:
                        generation = running[0].worker.stats.generate_seconds[before + 1:]
                        overhead = [a - b for a, b in zip(lat, generation, strict=True)]
                        pure = generation
            finally:
                for replica in running:
                    replica.__exit__(None, None, None)

        for label, cap in (("warm, cross-user batching (24 images/call)", 24),
                           ("warm, one request per call", 1)):
            replica = ThreadReplica(warm_settings(double, "replica-x", max_batch_images=cap,
                                                  reconcile_interval=5.0))
            with replica:
                lat, wall = anyio.run(scenario, double, WARM, args.users, args.rounds,
                                      args.images)
            batches = replica.worker.stats.batches[1:]
            throughput.append([label, f"{len(lat) * args.images / wall:.1f}",
                               f"{statistics.mean(batches):.1f}", f"{wall:.1f}"])

    print_table(f"Click-to-images on the cluster double, tiny model, CPU, {args.images} "
                "image(s) of 64x64 per request (seconds)",
                ["mode", "users", "requests", "p50", "p95", "images/s"], rows)
    if overhead:
        print(f"\nWarm overhead above generation (1 user, 1 replica, {len(overhead)} requests): "
              f"p50 {percentile(overhead, 50) * 1000:.0f} ms, "
              f"p95 {percentile(overhead, 95) * 1000:.0f} ms "
              f"(generation itself p50 {percentile(pure, 50) * 1000:.0f} ms)")
    print_table(f"Images per second, {args.users} users x {args.rounds} requests, 1 replica",
                ["mode", "images/s", "requests/call", "wall s"], throughput)
    ratio = float(throughput[0][1]) / float(throughput[1][1])
    print(f"\nCross-user batching: {ratio:.2f}x the images per second of one request per call")


if __name__ == "__main__":
    main()
