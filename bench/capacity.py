"""GPU capacity that follows demand: one day of load on the cluster double, three ways.

Everything runs on the double's capacity model (tests/double/capacity.py): a
pod start, a model load and a generation take their durations, on a pool of
GPUs that job pods and warm replicas share. The clock is scaled (``--scale``
real seconds per model second); every figure is in model seconds, and the
double's own per-request overhead (a few ms real) counts as model time too.

The day: idle; a burst of users (each opens the page, types, clicks a few
times); a trickle (one user now and then, one click each); idle again. Three
deployments:

- per-job only: every click is an OSCAR job (pod start + model load + generation);
- warm only: an exposed service with 2 replicas, up all day;
- spill-over with warm on demand: the warm service (stopped at dawn) is started
  when someone opens the page, stopped after 15 idle minutes; a request goes
  per-job while no replica is ready, or when the replicas cannot start it
  within 10 s.

For each: click-to-images p50/p95 per phase, GPU-seconds held (a pod holds
its GPU from scheduling to its end) and GPU-seconds used (generating).

    .venv/bin/python bench/capacity.py              # about 12 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from oscar_sd import GenerationRequest, OscarSD
from oscar_sd._notify.hub import close_all_hubs
from oscar_sd.service import load_pipeline
from tests.double import ClusterDouble
from tests.double.capacity import Capacity, Timing
from tests.spill_fixtures import (
    PER_JOB,
    connect_spill,
    deploy_pair,
    deploy_per_job,
    deploy_warm_replicas,
)
from tests.warm_fixtures import WARM

MODES = ("per-job only", "warm only (2 replicas)", "spill-over + warm on demand")
PHASES = ("burst", "trickle")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


@dataclass
class Day:
    """One mode's day: latencies per phase (model seconds), GPU-seconds."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: {p: [] for p in PHASES})
    held: float = 0.0
    used: float = 0.0
    routes: dict[str, int] = field(default_factory=dict)


async def run_day(mode: str, args: argparse.Namespace) -> Day:
    timing = Timing(pod_start=args.pod_start, model_load=args.model_load,
                    generation=args.generation, time_scale=args.scale)
    capacity = Capacity(timing, gpus=args.gpus)
    day = Day()
    rng = random.Random(7)
    scale = args.scale
    # MinIO sends a listen stream's first bytes with its first keep-alive: a short one
    # keeps the streams' opening (real time) from counting as many model seconds.
    with ClusterDouble(capacity=capacity, keepalive_interval=0.02) as double:
        connect: Any
        if mode == MODES[0]:
            deploy_per_job(double)
            connect = OscarSD.connect(double.oscar_endpoint, user="oscar", password="oscar-pw",
                                      service=PER_JOB, timeout=3600)
        elif mode == MODES[1]:
            deploy_warm_replicas(double, min_scale=2)
            ready = double.exposed[WARM].wait_available
            assert await anyio.to_thread.run_sync(ready, 2, 120)
            connect = OscarSD.connect(double.oscar_endpoint, user="oscar", password="oscar-pw",
                                      service=WARM, timeout=3600)
        else:
            deploy_pair(double, min_scale=2)
            deployment = double.exposed[WARM]
            deployment.stop()  # nobody was there overnight
            assert await anyio.to_thread.run_sync(deployment.wait_stopped, 120)
            connect = connect_spill(double, timeout=3600, spill_after=args.spill_after * scale,
                                    idle_stop=args.idle_stop * scale,
                                    check_interval=2 * scale)
        # The day starts with nobody there; the first sign-in (the app's client,
        # which starts a stopped warm service) comes with the burst.
        dawn = timing.now()
        await anyio.sleep(args.idle_before * scale)
        async with connect as client:
            spill = client if mode == MODES[2] else None

            def page_open() -> None:
                if spill is not None:
                    spill.control.touch()

            async def click(phase: str, n: int) -> None:
                started = time.monotonic()
                request = GenerationRequest(prompt=f"a lighthouse, take {n}", seed=n,
                                            width=64, height=64, num_images=1)
                await client.generate(request)
                day.latencies[phase].append((time.monotonic() - started) / scale)

            async def person(phase: str, arrive: float, clicks: int, n: int) -> None:
                await anyio.sleep(arrive * scale)
                page_open()
                await anyio.sleep(args.typing * scale)
                for c in range(clicks):
                    await click(phase, n * 100 + c)
                    if c + 1 < clicks:
                        await anyio.sleep(args.between * scale)

            async with anyio.create_task_group() as control_task:
                if spill is not None:
                    control_task.start_soon(spill.control.run)
                async with anyio.create_task_group() as people:
                    for n in range(args.users):
                        people.start_soon(person, "burst", rng.uniform(0, args.arrivals),
                                          args.clicks, n)
                async with anyio.create_task_group() as people:
                    for k in range(int(args.trickle / args.trickle_every)):
                        people.start_soon(person, "trickle", k * args.trickle_every, 1,
                                          1000 + k)
                await anyio.sleep(args.idle_after * scale)
                control_task.cancel_scope.cancel()
            day.held = capacity.pool.held_seconds(since=dawn)
            day.used = capacity.pool.used_seconds
            if spill is not None:
                day.routes = {"warm": spill.stats.warm, "per-job": spill.stats.per_job,
                              "spilled while waiting": spill.stats.spilled_late,
                              "warm starts": spill.control.starts,
                              "warm stops": spill.control.stops}
    close_all_hubs()  # each day runs in an event loop of its own
    return day


def print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    print(f"\n{title}")
    for line in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add = parser.add_argument
    add("--gpus", type=int, default=4, help="GPUs in the pool (default 4)")
    add("--pod-start", type=float, default=20.0, help="model seconds (default 20)")
    add("--model-load", type=float, default=10.0, help="model seconds (default 10)")
    add("--generation", type=float, default=1.0,
        help="model seconds per request (default 1)")
    add("--scale", type=float, default=0.1,
        help="real seconds per model second (default 0.1: 20 s of pod start is 2 s)")
    add("--users", type=int, default=50, help="people in the burst (default 50)")
    add("--arrivals", type=float, default=60.0,
        help="the burst's people arrive over this many model seconds (default 60)")
    add("--typing", type=float, default=30.0,
        help="seconds from opening the page to the first click (default 30)")
    add("--clicks", type=int, default=3, help="clicks per person in the burst (default 3)")
    add("--between", type=float, default=15.0,
        help="seconds between seeing the images and the next click (default 15)")
    add("--trickle", type=float, default=600.0, help="the trickle's length (default 600 s)")
    add("--trickle-every", type=float, default=30.0,
        help="one person every this many seconds in the trickle (default 30)")
    add("--idle-before", type=float, default=120.0, help="idle at dawn (default 120 s)")
    add("--idle-after", type=float, default=1000.0,
        help="idle at night (default 1000 s: past the 900 s idle stop)")
    add("--spill-after", type=float, default=10.0, help="spill bound (default 10 s)")
    add("--idle-stop", type=float, default=900.0, help="warm idle stop (default 900 s)")
    args = parser.parse_args()
    load_pipeline("tiny", "cpu")  # the replicas' request defaults; generation is timed

    days = {mode: anyio.run(run_day, mode, args) for mode in MODES}
    rows = []
    for mode, day in days.items():
        cells = [mode]
        for phase in PHASES:
            values = day.latencies[phase]
            cells += [str(len(values)), f"{percentile(values, 50):.1f}",
                      f"{percentile(values, 95):.1f}"]
        cells += [f"{day.held:.0f}", f"{day.used:.0f}"]
        rows.append(cells)
    print_table(
        f"One day on the cluster double: {args.gpus} GPUs, pod start {args.pod_start:g} s, "
        f"model load {args.model_load:g} s, generation {args.generation:g} s per request; "
        f"model seconds (clock scaled: 1 model s = {args.scale * 1000:g} ms real).\n"
        f"Burst: {args.users} people arriving over {args.arrivals:g} s, each typing "
        f"{args.typing:g} s, then {args.clicks} clicks {args.between:g} s apart; trickle: one "
        f"click every {args.trickle_every:g} s for {args.trickle:g} s; idle "
        f"{args.idle_before:g} s before, {args.idle_after:g} s after.",
        ["mode", "burst n", "burst p50", "burst p95", "trickle n", "trickle p50",
         "trickle p95", "GPU-s held", "GPU-s used"], rows)
    spill, warm, per_job = days[MODES[2]], days[MODES[1]], days[MODES[0]]
    print(f"\nSpill-over paths: {spill.routes}")
    burst_ratio = percentile(spill.latencies["burst"], 95) / percentile(
        warm.latencies["burst"], 95)
    held_ratio = spill.held / per_job.held
    print(f"Spill-over burst p95 / warm-only burst p95: {burst_ratio:.2f}x (target within 1.5x)")
    print(f"Spill-over GPU-s held / per-job-only GPU-s held: {held_ratio:.2f}x "
          "(target within 1.3x)")


if __name__ == "__main__":
    main()
