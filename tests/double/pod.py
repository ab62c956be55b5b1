"""What OSCAR gives a job's pod besides its input file, for the handlers running in the double.

grycap/oscar ``pkg/handlers/job.go`` (``POST /job/{svc}``, which MinIO's
webhook calls for an upload) gives the job's container ``EVENT`` (the body
OSCAR was called with: MinIO's webhook event) and ``JOB_UUID`` (the job's
name, ``<service>-<uuid>``; ``pkg/types/service.go``), and mounts the MinIO
keys of the user whose upload started the job at
``/var/run/secrets/providers/minio.default`` and the service's definition at
``/oscar/config/function_config.yaml`` (with ``storage_providers.minio.default``,
``pkg/handlers/create.go``). A handler runs in the runner's thread:
:func:`current_job` is its pod's view of these, and :attr:`JobContext.worker_env`
the environment the worker reads them from (the keys in a folder of the job's
own, named by ``OSCAR_SD_PROVIDERS_DIR``; the definition as ``FUNCTION_CONFIG``,
base64 YAML, which faas-supervisor reads when the file is absent).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass(frozen=True)
class JobContext:
    """One job's environment and mounted keys."""

    name: str
    event: str
    #: The double's S3 endpoint as a URL, and the output folders the job writes to.
    minio_endpoint: str
    outputs: tuple[tuple[str, str], ...]  # (bucket, folder)
    access_key: str = field(repr=False)
    secret_key: str = field(repr=False)
    #: The mounted keys' folder and the service definition (base64 YAML), for the worker.
    providers_dir: str = ""
    function_config: str = ""

    @property
    def env(self) -> dict[str, str]:
        """The variables OSCAR adds to the job's container."""
        return {"JOB_UUID": self.name, "EVENT": self.event}

    @property
    def worker_env(self) -> dict[str, str]:
        """What the worker reads its mounts from (oscar_sd/service/marker.py)."""
        return {**self.env, "OSCAR_SD_PROVIDERS_DIR": self.providers_dir,
                "OSCAR_SD_FUNCTION_CONFIG": "/nonexistent/function_config.yaml",
                "FUNCTION_CONFIG": self.function_config}

    @property
    def minio_host(self) -> str:
        """``host:port`` of the storage, as minio.Minio wants it."""
        return urlsplit(self.minio_endpoint).netloc


_local = threading.local()


def current_job() -> JobContext | None:
    """The job whose handler runs on this thread, or None outside a job."""
    return getattr(_local, "job", None)


@contextmanager
def running(job: JobContext) -> Iterator[None]:
    """Make ``job`` the current job of this thread while its handler runs."""
    _local.job = job
    try:
        yield
    finally:
        _local.job = None
