"""A warm service and its per-job partner on the cluster double, as one logical service.

The warm service is an exposed service whose Deployment (tests/double/exposed.py)
runs :class:`WarmWorker` replicas; the per-job service runs a job per upload.
With a capacity model both take their time and share the double's GPU pool.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from oscar_sd import GenerationRequest
from oscar_sd._connect import Connecting
from oscar_sd._service_paths import SPILL_SERVICE_VARIABLE
from oscar_sd._spill import SpillOver
from oscar_sd._spill_connect import connect_pair
from oscar_sd.service.generate import GeneratedImage, RequestOutcome
from oscar_sd.service.warm import WarmWorker
from tests.double import ClusterDouble, services
from tests.double.capacity import Capacity
from tests.warm_fixtures import INPUT, OUTPUT, WARM, warm_settings

PER_JOB = "stable-diffusion"
PER_JOB_INPUT, PER_JOB_OUTPUT = f"{PER_JOB}/in", f"{PER_JOB}/out"


def fake_batches(capacity: Capacity | None) -> Callable[..., list[RequestOutcome]]:
    """A stand-in for generate_batch: the double's images, after the generation's time
    (one ``generation`` per request of the call) on the capacity model's clock."""

    def generate(requests: Sequence[GenerationRequest], *,
                 on_outcome: Callable[[int, RequestOutcome], None] | None = None,
                 **_: Any) -> list[RequestOutcome]:
        if capacity is not None:
            seconds = capacity.timing.generation * len(requests)
            capacity.timing.wait(seconds)
            capacity.pool.generated(seconds)
        outcomes = []
        for index, request in enumerate(requests):
            payload = request.to_payload()
            images = [GeneratedImage(n, int(request.seed or 0) + n,
                                     services.render_png(payload, n), request, "fake")
                      for n in range(1, request.num_images + 1)]
            outcome = RequestOutcome(request, images)
            outcomes.append(outcome)
            if on_outcome is not None:
                on_outcome(index, outcome)
        return outcomes

    return generate


def warm_definition(*, min_scale: int = 2, max_scale: int = 2) -> dict[str, Any]:
    """manifests/stable-diffusion-warm.yaml as OSCAR holds it, naming its per-job partner."""
    return {
        "name": WARM, "enable_gpu": True,
        "output": [{"storage_provider": "minio.default", "path": OUTPUT}],
        "environment": {"variables": {"OSCAR_SD_INPUT_PATH": INPUT,
                                      "OSCAR_SD_OUTPUT_PATH": OUTPUT,
                                      SPILL_SERVICE_VARIABLE: PER_JOB}},
        "expose": {"api_port": 8080, "min_scale": min_scale, "max_scale": max_scale},
    }


def deploy_per_job(double: ClusterDouble) -> None:
    """The per-job service; its jobs write their started marker, as the worker does."""
    double.add_service(PER_JOB, input_path=PER_JOB_INPUT, output_path=PER_JOB_OUTPUT,
                       handler=services.started_then(), enable_gpu=True)


def deploy_warm_replicas(double: ClusterDouble, *, min_scale: int = 2,
                         replicas: list[WarmWorker] | None = None, **settings: Any) -> None:
    """The warm service, whose replicas run the fast fake generator; ``replicas``
    collects them as their pods start."""

    def make_replica(name: str) -> WarmWorker:
        worker = WarmWorker(warm_settings(double, name, **settings),
                            generate=fake_batches(double.capacity))
        if replicas is not None:
            replicas.append(worker)
        return worker

    double.deploy_exposed(warm_definition(min_scale=min_scale, max_scale=max(2, min_scale)),
                          make_replica)


def deploy_pair(double: ClusterDouble, *, min_scale: int = 2,
                replicas: list[WarmWorker] | None = None, **settings: Any) -> None:
    """The per-job service and the warm service that spills to it."""
    deploy_per_job(double)
    deploy_warm_replicas(double, min_scale=min_scale, replicas=replicas, **settings)


def connect_spill(double: ClusterDouble, **options: Any) -> Connecting[SpillOver]:
    """The app's client for the pair, as the cluster's admin."""
    values: dict[str, Any] = {"user": "oscar", "password": "oscar-pw", "timeout": 120.0,
                              "check_interval": 0.01}
    values.update(options)
    return connect_pair(double.oscar_endpoint, service=WARM, **values)
