"""A refused listen request: how soon listing-only mode starts, how soon requests complete.

The users of a ``restricted`` OSCAR service may not listen (MinIO answers 403
AccessDenied, grycap/oscar ``pkg/utils/minio.go``); other servers and proxies
refuse in other ways. Against the cluster double with each refusal, this
measures the time from a client's first request to its hub running in
listing-only mode (target <= 2 s), and from each result landing in the bucket
to its request completing (target <= 10 s). Baseline (the issue's report): each
such request waited for its whole deadline, 900 s by default, while the page
said "Cannot reach the cluster's storage".

Run: .venv/bin/python bench/listen_refused.py [--requests 20]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import anyio
import anyio.to_thread

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from oscar_sd import GenerationRequest, OscarSD
from oscar_sd._notify.hub import close_all_hubs
from tests.double import ClusterDouble

SERVICE = "stable-diffusion"
KINDS = ["access-denied", "method-not-allowed", "not-implemented", "proxy-501", "proxy-403"]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def run(how: str, count: int) -> tuple[float, list[float]]:
    close_all_hubs()
    with ClusterDouble() as cluster:
        cluster.add_service(SERVICE, input_path=f"{SERVICE}/in", output_path=f"{SERVICE}/out")
        cluster.refuse_listen(cluster.minio_access_key, how)
        landed: dict[str, float] = {}
        cluster.on_object_created = lambda bucket, key, at: landed.setdefault(key, at)
        async with OscarSD.connect(cluster.oscar_endpoint, service=SERVICE,
                                   user=cluster.admin[0], password=cluster.admin[1]) as sd:
            after: list[float] = []
            started = time.perf_counter()
            mode_at: list[float] = []

            def watch_mode() -> None:  # set by the hub's reader thread: no event to await
                while not sd._hub.stats.listen_unsupported:
                    if time.perf_counter() - started > 60:
                        raise RuntimeError("the hub never went into listing-only mode")
                    time.sleep(0.005)
                mode_at.append(time.perf_counter() - started)

            async def one(index: int) -> None:
                result = await sd.generate(GenerationRequest(prompt=f"refused {index}",
                                                             seed=index, num_images=1))
                done = time.perf_counter()
                key = next(k for k in landed if result.job_id in k and k.endswith(".zip"))
                after.append(done - landed[key])

            async with anyio.create_task_group() as tasks:
                tasks.start_soon(anyio.to_thread.run_sync, watch_mode)
                for index in range(count):
                    tasks.start_soon(one, index)
        close_all_hubs()
    return mode_at[0], after


async def main(count: int) -> None:
    rows = [(how, *await run(how, count)) for how in KINDS]
    print(f"\nlisten refused, {count} concurrent requests each (2-core machine, cluster double)\n")
    header = (f"{'refusal':<20} | {'listing-only after s':>20} | {'landed->done p50 s':>18} | "
              f"{'p95 s':>6} | {'max s':>6}")
    print(header)
    print("-" * len(header))
    for how, mode, after in rows:
        print(f"{how:<20} | {mode:>20.2f} | {percentile(after, 50):>18.2f} | "
              f"{percentile(after, 95):>6.2f} | {max(after):>6.2f}")
    print("\n(targets: listing-only within 2 s, each request done within 10 s of its result "
          "landing; baseline: each waited its whole deadline, 900 s)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20)
    anyio.run(main, parser.parse_args().requests)
