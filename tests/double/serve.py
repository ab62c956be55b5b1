"""Run a ClusterDouble in its own process, for benchmarks: ``python -m tests.double.serve``.

It prints one JSON line with the endpoints and keys, then answers one JSON
line per command read from stdin:

- ``hold`` / ``release``: jobs stay Pending / run now (a burst of results);
- ``delay MIN MAX``: each job takes a random MIN..MAX seconds;
- ``landed``: ``{key: perf_counter time}`` of every result written since the
  last ``landed`` (CLOCK_MONOTONIC: comparable across processes on Linux);
- ``listeners``: how many listen streams are open; ``dropped``: events dropped so far
  for readers that fell behind;
- ``cpu``: the double's own CPU seconds so far; ``objects``: objects in the bucket;
- ``counters``: storage connections and requests by method since the last ``counters``;
- ``quit``.
"""

from __future__ import annotations

import json
import resource
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from . import services
from .cluster import ClusterDouble

SERVICE = "stable-diffusion"


class CountingApp:
    """The S3 front's WSGI app, counting requests and distinct client connections."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app
        self.lock = threading.Lock()
        self.requests: Counter[str] = Counter()
        self.connections: set[tuple[str, str]] = set()

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        with self.lock:
            self.requests[environ["REQUEST_METHOD"]] += 1
            self.connections.add((environ.get("REMOTE_ADDR", ""), environ.get("REMOTE_PORT", "")))
        return self.app(environ, start_response)

    def take(self) -> dict[str, Any]:
        with self.lock:
            answer = {"connections": len(self.connections), "requests": dict(self.requests)}
            self.requests.clear()
            self.connections.clear()
        return answer


def main() -> None:
    double = ClusterDouble()
    counting = CountingApp(double.storage)
    double._s3_server._server.app = counting  # count what reaches "MinIO"
    landed: dict[str, float] = {}
    lock = threading.Lock()

    def on_created(bucket: str, key: str, when: float) -> None:
        if key.startswith("out/"):
            with lock:
                landed[key] = when

    with double:
        double.add_service(SERVICE, input_path=f"{SERVICE}/in", output_path=f"{SERVICE}/out",
                           handler=services.fake_generator)
        double.on_object_created = on_created
        print(json.dumps({
            "oscar_endpoint": double.oscar_endpoint, "minio_endpoint": double.minio_endpoint,
            "user": double.admin[0], "password": double.admin[1],
            "access_key": double.minio_access_key, "secret_key": double.minio_secret_key,
            "bucket": SERVICE,
        }), flush=True)
        for line in sys.stdin:
            command, *arguments = line.split()
            answer: Any = "ok"
            if command == "hold":
                double.hold_jobs()
            elif command == "release":
                double.release_jobs()
            elif command == "delay":
                service = double.runner.services[SERVICE]
                service.job_delay, service.job_delay_max = map(float, arguments)
            elif command == "landed":
                with lock:
                    answer, landed = dict(landed), {}
            elif command == "listeners":
                answer = double.listen_connections
            elif command == "cpu":  # this process's CPU seconds so far
                usage = resource.getrusage(resource.RUSAGE_SELF)
                answer = usage.ru_utime + usage.ru_stime
            elif command == "objects":  # how many objects the service's bucket holds
                answer = len(double.list_keys(SERVICE))
            elif command == "dropped":
                answer = double.storage.hub.dropped_total
            elif command == "counters":
                answer = counting.take()
            elif command == "quit":
                break
            print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
