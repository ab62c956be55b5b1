"""Click-to-six-images time of the web app, through gradio_client.

The app runs on loopback against the cluster double, whose service answers
at once (the fake generator, no job delay). The double, the app and the
clients each run in a process of their own, as on three machines. Measured is the app:
Gradio's queue, the OSCAR client, MinIO upload, the notification, the
download and unpacking, and the six PNGs fetched by the client. Each user is
a login of its own (all with the cluster's one basic-auth account, as OSCAR
has one, so each login its own session) with its own client; all users click
at the same time, round after round.

    .venv/bin/python bench/ui.py [--rounds 10] [--users 1 50]

Target: p50 at or under 1 s with 50 users.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import ssl
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

from gradio_client import Client

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.double import ClusterDouble, services
from tests.ui_fixtures import cluster_settings, running_app

SERVICE = "stable-diffusion"


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


ADMIN = ("oscar", "oscar-pw")


def accounts_for(users: int) -> dict[str, tuple[str, str]]:
    """One login per user, each with the cluster's only basic-auth account."""
    return {f"user{index:02d}": ADMIN for index in range(users)}


def serve_cluster(users: int, ready: Connection, stop: Event) -> None:
    """In a process of its own, as a real cluster is: the double, until ``stop``."""
    with ClusterDouble(admin=ADMIN) as double:
        double.add_service(
            SERVICE,
            input_path=f"{SERVICE}/in",
            output_path=f"{SERVICE}/out",
            handler=services.fake_generator,
        )
        ready.send(double.oscar_endpoint)
        stop.wait()


def serve_app(endpoint: str, users: int, ready: Connection, stop: Event) -> None:
    """In a process of its own: the web app, until ``stop``."""
    settings = cluster_settings(endpoint, concurrency=max(64, users))
    with running_app(settings) as app:
        ready.send(app.url)
        stop.wait()


def start(target: Callable[..., None], *args: object) -> tuple[Any, BaseProcess, Event]:
    """Run ``target(*args, ready, stop)`` in a fresh process; returns what it sends when ready."""
    processes = multiprocessing.get_context("spawn")
    ready, ready_in_child = processes.Pipe(duplex=False)
    stop = processes.Event()
    process = processes.Process(target=target, args=(*args, ready_in_child, stop), daemon=True)
    process.start()
    return ready.recv(), process, stop


@dataclass
class Run:
    """One measured run: every request's seconds, and the CPU each process spent on them."""

    timings: list[float]
    cpu: dict[str, float]  # seconds, per process, while the timed rounds ran


def cpu_seconds(pid: int | None = None) -> float:
    """CPU time (user + system) of a process: this one, or a child by its pid (Linux /proc)."""
    if pid is None:
        return time.process_time()
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(users: int, rounds: int, downloads: Path) -> Run:
    """Seconds from click to six images in hand, for every request of every user."""
    endpoint, cluster, stop_cluster = start(serve_cluster, users)
    url, app, stop_app = start(serve_app, endpoint, users)
    accounts = accounts_for(users)
    # gradio_client opens a new HTTP client for every file it downloads; left
    # alone, each one reads the system's CA bundle anew, and that costs more CPU
    # than the app itself. One TLS context, as a browser has, measures the app.
    tls = ssl.create_default_context()
    try:
        apis = [
            Client(
                url,
                auth=account,
                verbose=False,
                download_files=str(downloads / name),
                ssl_verify=tls,  # type: ignore[arg-type]
            )
            for name, account in accounts.items()
        ]
        for api in apis:  # warm up: first connection, hub stream open
            api.predict("warm-up", api_name="/generate")

        timings: list[float] = []
        lock = threading.Lock()
        start_together = threading.Barrier(users)

        def one_user(index: int) -> None:
            api = apis[index]
            for round_ in range(rounds):
                start_together.wait()
                started = time.perf_counter()
                images, _, _ = api.predict(f"user {index} round {round_}", api_name="/generate")
                took = time.perf_counter() - started
                assert len(images) == 6, images
                with lock:
                    timings.append(took)

        processes = {"app": app.pid, "cluster double": cluster.pid, "clients": None}
        cpu_before = {name: cpu_seconds(pid) for name, pid in processes.items()}
        threads = [threading.Thread(target=one_user, args=(i,)) for i in range(users)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        cpu = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in processes.items()}
        return Run(timings, cpu)
    finally:
        for stop, process in ((stop_app, app), (stop_cluster, cluster)):
            stop.set()
            process.join(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10, help="clicks per user (default 10)")
    parser.add_argument("--users", type=int, nargs="+", default=[1, 50])
    args = parser.parse_args()

    runs: list[tuple[int, Run]] = []
    with tempfile.TemporaryDirectory(prefix="oscar-sd-bench-") as downloads:
        for users in args.users:
            runs.append((users, measure(users, args.rounds, Path(downloads) / f"{users}")))

    print()
    print("click-to-six-images through gradio_client (cluster double, service answers at once)")
    print(f"{'users':>5}  {'requests':>8}  {'p50 (s)':>8}  {'p95 (s)':>8}  {'max (s)':>8}")
    for users, run in runs:
        timings = run.timings
        print(
            f"{users:>5}  {len(timings):>8}  {statistics.median(timings):>8.3f}  "
            f"{percentile(timings, 0.95):>8.3f}  {max(timings):>8.3f}"
        )
    print()
    print(f"CPU per click (ms), on {os.cpu_count()} cores")
    names = list(runs[0][1].cpu)
    print(f"{'users':>5}  " + "  ".join(f"{name:>14}" for name in names))
    for users, run in runs:
        per_click = [1000 * run.cpu[name] / len(run.timings) for name in names]
        print(f"{users:>5}  " + "  ".join(f"{ms:>14.1f}" for ms in per_click))

if __name__ == "__main__":
    main()
