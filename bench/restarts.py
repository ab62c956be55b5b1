"""MinIO restarts while people work: ok, failed, left behind.

OSCAR restarts MinIO on every service create and delete (grycap/oscar
``pkg/handlers/create.go``, ``delete.go``). Against the cluster double, which
restarts as MinIO does (listening socket closed so connections are refused,
open and idle kept-alive connections reset, listen streams dropped, back on the
same port: ``tests/double/server.py``), this runs N concurrent requests while
MinIO restarts every 500 ms with 100 ms of refused connections, and counts the
requests that succeeded, those that failed (by error), and the objects of them
still in the bucket 10 s after the last one ended.

Target: 500 of 500 succeed, nothing left behind. The baseline row is the
previous storage client given its honest chance: urllib3's own retries as they
were (a refused connection retried once at once, 5xx five times with backoff),
no outage gate.

Run: .venv/bin/python bench/restarts.py [--requests 500] [--every 0.5] [--refuse 0.1]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import urllib3

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from oscar_sd import GenerationRequest, OscarSD
from oscar_sd._notify.hub import close_all_hubs
from oscar_sd._outage_gate import OutageGate
from tests.double import ClusterDouble

SERVICE = BUCKET = "stable-diffusion"
LEFT_AFTER = 10.0


def as_before(sd: OscarSD) -> None:
    """The storage client as it was: urllib3 retrying on its own, no gate."""
    storage = sd._storage
    storage._client._http = urllib3.PoolManager(
        maxsize=storage.pool_size, timeout=urllib3.Timeout(connect=10, read=120),
        retries=urllib3.Retry(total=5, connect=1, backoff_factor=0.2,
                              status_forcelist=[500, 502, 503, 504]))
    storage.gate = OutageGate(grace=0.0)  # the first failure is final


async def run(count: int, every: float, refuse: float, baseline: bool) -> dict[str, Any]:
    close_all_hubs()
    with ClusterDouble() as cluster:
        cluster.add_service(SERVICE, input_path=f"{SERVICE}/in", output_path=f"{SERVICE}/out")
        async with OscarSD.connect(cluster.oscar_endpoint, service=SERVICE,
                                   user=cluster.admin[0], password=cluster.admin[1],
                                   timeout=600) as sd:
            if baseline:
                as_before(sd)
            outcomes: Counter[str] = Counter()
            took: list[float] = []

            async def one(index: int) -> None:
                started = time.perf_counter()
                try:
                    await sd.generate(GenerationRequest(prompt=f"restart {index}", seed=index,
                                                        num_images=1))
                except Exception as exc:
                    outcomes[type(exc).__name__] += 1
                else:
                    outcomes["ok"] += 1
                    took.append(time.perf_counter() - started)

            started = time.perf_counter()
            with cluster.restarting_minio(every=every, refuse_for=refuse) as restarts:
                async with anyio.create_task_group() as tasks:
                    for index in range(count):
                        tasks.start_soon(one, index)
                restarted = restarts.count
            wall = time.perf_counter() - started
            await anyio.sleep(LEFT_AFTER)  # what the clean-up has not removed by then stays
            left = len(cluster.list_keys(BUCKET))
            gate = sd._storage.gate
        close_all_hubs()
    took.sort()
    return {
        "ok": outcomes.pop("ok", 0), "failed": sum(outcomes.values()),
        "errors": dict(outcomes), "left": left, "restarts": restarted, "wall": wall,
        "p50": took[len(took) // 2] if took else float("nan"),
        "p95": took[int(len(took) * 0.95)] if took else float("nan"),
        "retries": gate.retries, "outages": gate.outages,
    }


async def main(count: int, every: float, refuse: float, baseline: bool) -> None:
    rows = [("outage gate (this client)", await run(count, every, refuse, baseline=False))]
    if baseline:
        rows.append(("baseline: urllib3 retries, no gate", await run(count, every, refuse,
                                                                     baseline=True)))
    print(f"\n{count} concurrent requests, MinIO restarting every {every:g} s with {refuse:g} s "
          f"of refused connections (2-core machine, cluster double on loopback)\n")
    header = (f"{'client':<36} | {'ok':>4} | {'failed':>6} | {'left behind':>11} | "
              f"{'restarts':>8} | {'p50 s':>6} | {'p95 s':>6} | {'wall s':>6}")
    print(header)
    print("-" * len(header))
    for name, row in rows:
        print(f"{name:<36} | {row['ok']:>4} | {row['failed']:>6} | {row['left']:>11} | "
              f"{row['restarts']:>8} | {row['p50']:>6.2f} | {row['p95']:>6.2f} | "
              f"{row['wall']:>6.1f}")
    for name, row in rows:
        print(f"\n{name}: failures {row['errors'] or 'none'}; gate: {row['outages']} outages, "
              f"{row['retries']} retried calls")
    print(f"\n(left behind: objects in the bucket {LEFT_AFTER:g} s after the last request "
          f"ended; target: {count} ok, 0 failed, 0 left behind)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--every", type=float, default=0.5)
    parser.add_argument("--refuse", type=float, default=0.1)
    parser.add_argument("--no-baseline", action="store_true")
    options = parser.parse_args()
    anyio.run(main, options.requests, options.every, options.refuse, not options.no_baseline)
