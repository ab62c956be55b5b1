"""``<output folder>/<job>.started.json``: the job tells the app it is running.

The app's hub hears this object like any result and moves the request from
"waiting for a GPU" to "running". Body::

    {"job": "$JOB_UUID (the OSCAR job name)", "host": "<hostname>",
     "started_at": "2026-11-26T07:23:36.585+00:00"}

Where a job finds what it needs (grycap/oscar ``pkg/handlers/job.go``,
grycap/faas-supervisor ``faassupervisor/storage/config.py`` and ``utils.py``):

- the MinIO keys of the user who uploaded the input: OSCAR mounts their secret
  read-only at ``/var/run/secrets/providers/minio.default``, files
  ``accessKey`` and ``secretKey`` (``OSCAR_SD_PROVIDERS_DIR`` overrides the
  folder, for tests and local runs);
- the endpoint and the output path: the service's own definition, which OSCAR
  mounts at ``/oscar/config/function_config.yaml`` (faas-supervisor falls back
  to ``$FUNCTION_CONFIG``, base64 YAML; so do we): ``storage_providers.minio.
  default.{endpoint, verify, region}`` (OSCAR writes its keys there as
  ``hidden``, ``pkg/handlers/create.go``; faas-supervisor's default endpoint
  is ``http://minio-service.minio:9000``) and the first ``output[]`` entry on
  ``minio.default``, ``<bucket>/<folder>``: the very folder faas-supervisor
  uploads the results to. ``OSCAR_SD_OUTPUT_PATH`` overrides it (the warm
  service, which has no per-upload job, sets it in its FDL).
- under ``isolation_level: USER``, the bucket of the event (``$EVENT``,
  ``Records[0].s3.bucket.name``) when it is one of the definition's
  ``bucket_list``: faas-supervisor (``faassupervisor/storage/config.py``,
  ``upload_output``) then uploads the outputs to ``<event bucket>/<output
  folder>``, the user's private bucket, and the marker must land beside them.

Writing the marker never fails the job: without keys (a local run, a test) it
is skipped with one log line, and any error is logged and ignored. The keys
never reach a log line.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

logger = logging.getLogger("oscar_sd.service")

PROVIDERS_DIR = "/var/run/secrets/providers/minio.default"
FUNCTION_CONFIG_PATH = "/oscar/config/function_config.yaml"
DEFAULT_MINIO_ENDPOINT = "http://minio-service.minio:9000"
STARTED_SUFFIX = ".started.json"

#: What :func:`write_started_marker` did: ``taken`` = an exclusive write found
#: the marker already there (another worker claimed the request).
MarkerResult = Literal["written", "taken", "skipped", "failed"]


@dataclass(frozen=True)
class StartedMarker:
    """The body of ``<job>.started.json``."""

    #: The OSCAR job name (``$JOB_UUID``), or the worker's name in warm mode.
    job: str
    host: str
    started_at: str

    @classmethod
    def now(cls, job: str | None = None) -> StartedMarker:
        """A marker for this process, now: ``job`` defaults to ``$JOB_UUID``."""
        return cls(
            job=job if job is not None else os.environ.get("JOB_UUID", ""),
            host=socket.gethostname(),
            started_at=datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
        )

    def to_json(self) -> bytes:
        return json.dumps(
            {"job": self.job, "host": self.host, "started_at": self.started_at}
        ).encode()


@dataclass(frozen=True)
class OutputStore:
    """The job's output folder in MinIO, with the keys to write there."""

    endpoint: str  # host[:port], as minio.Minio wants it
    secure: bool
    verify: bool
    region: str | None
    bucket: str
    folder: str
    access_key: str = field(repr=False)
    secret_key: str = field(repr=False)

    def key(self, name: str) -> str:
        return f"{self.folder}/{name}" if self.folder else name

    @classmethod
    def from_job_environment(cls, env: Mapping[str, str] | None = None) -> OutputStore | None:
        """The store described by the job's mounts and environment (``env``, default
        ``os.environ``); None (logged) if absent."""
        env = os.environ if env is None else env
        folder = Path(env.get("OSCAR_SD_PROVIDERS_DIR") or PROVIDERS_DIR)
        try:
            access_key = (folder / "accessKey").read_text().strip()
            secret_key = (folder / "secretKey").read_text().strip()
        except OSError:
            logger.info("No MinIO keys at %s: not writing the started marker", folder)
            return None
        config = _function_config(env)
        provider = ((config.get("storage_providers") or {}).get("minio") or {}).get(
            "default"
        ) or {}
        path = env.get("OSCAR_SD_OUTPUT_PATH", "").strip() or event_output_path(
            _output_path(config), config, env.get("EVENT", ""))
        if not path or not access_key or not secret_key:
            logger.info("No output path or empty MinIO keys: not writing the started marker")
            return None
        url = urlsplit(str(provider.get("endpoint") or DEFAULT_MINIO_ENDPOINT))
        bucket, _, rest = path.strip("/").partition("/")
        return cls(
            endpoint=url.netloc or url.path,
            secure=url.scheme == "https",
            verify=provider.get("verify", True) not in (False, "false", "False"),
            region=provider.get("region") or None,
            bucket=bucket,
            folder=rest.strip("/"),
            access_key=access_key,
            secret_key=secret_key,
        )


def write_started_marker(
    request_id: str,
    *,
    store: OutputStore | None = None,
    marker: StartedMarker | None = None,
    exclusive: bool = False,
) -> MarkerResult:
    """Write ``<output folder>/<request_id>.started.json``; never raises.

    ``store`` defaults to :meth:`OutputStore.from_job_environment`, ``marker``
    to :meth:`StartedMarker.now`. ``exclusive`` sends ``If-None-Match: *`` (a
    conditional PUT, which MinIO honours with 412 when the key exists): the
    warm worker's claim on a request; ``"taken"`` means another got there first.
    """
    try:
        store = store or OutputStore.from_job_environment()
        if store is None:
            return "skipped"
        body = (marker or StartedMarker.now()).to_json()
        key = store.key(request_id + STARTED_SUFFIX)
        return _put(store, key, body, exclusive)
    except Exception as exc:  # a marker is a courtesy: the job goes on without it
        logger.warning("Could not write the started marker of %s (%s)", request_id,
                       type(exc).__name__)
        return "failed"


def _put(store: OutputStore, key: str, body: bytes, exclusive: bool) -> MarkerResult:
    import urllib3
    from minio import Minio
    from minio.error import S3Error

    # Short timeouts and few retries: the marker must not hold up the generation.
    http = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=3, read=10),
        retries=urllib3.Retry(total=2, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]),
        cert_reqs="CERT_REQUIRED" if store.verify else "CERT_NONE",
    )
    client = Minio(store.endpoint, access_key=store.access_key, secret_key=store.secret_key,
                   secure=store.secure, region=store.region, http_client=http)
    headers = {"Content-Type": "application/json"}
    try:
        if exclusive:
            # minio-py's put_object turns unknown headers into user metadata; the
            # precondition must travel as a plain header.
            client._put_object(store.bucket, key, body, headers={**headers, "If-None-Match": "*"})
        else:
            client.put_object(store.bucket, key, io.BytesIO(body), len(body),
                              content_type=headers["Content-Type"])
    except S3Error as exc:
        if exclusive and exc.code in ("PreconditionFailed", "412"):
            logger.info("Request %s is already claimed (%s exists)", key, key)
            return "taken"
        raise
    logger.info("Wrote the started marker %s/%s", store.bucket, key)
    return "written"


def _function_config(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The service definition OSCAR gives the job (as faas-supervisor reads it)."""
    import yaml

    env = os.environ if env is None else env
    text = ""
    path = Path(env.get("OSCAR_SD_FUNCTION_CONFIG") or FUNCTION_CONFIG_PATH)
    if path.is_file():
        text = path.read_text(encoding="utf-8")
    elif env.get("FUNCTION_CONFIG"):
        text = base64.b64decode(env["FUNCTION_CONFIG"]).decode("utf-8")
    config = yaml.safe_load(text) if text else None
    return config if isinstance(config, dict) else {}


def _output_path(config: dict[str, Any]) -> str:
    for entry in config.get("output") or []:
        provider = str(entry.get("storage_provider", "")).lower()
        if provider in ("minio", "minio.default") and entry.get("path"):
            return str(entry["path"])
    return ""


def event_output_path(path: str, config: dict[str, Any], event: str) -> str:
    """Where faas-supervisor puts this event's outputs: ``path``, or under ``isolation_level:
    USER`` the event's bucket (one of ``bucket_list``) with ``path``'s folder
    (``faassupervisor/storage/config.py`` ``upload_output``)."""
    if config.get("isolation_level") != "USER":
        return path
    bucket = _event_bucket(event)
    folder = path.strip("/").split("/")[1:]
    if not bucket or bucket not in (config.get("bucket_list") or []) or not folder:
        return path
    return f"{bucket}/{'/'.join(folder)}"


def _event_bucket(event: str) -> str:
    """``Records[0].s3.bucket.name`` of MinIO's event (faassupervisor/events/minio.py)."""
    try:
        record = json.loads(event)["Records"][0]
        return str(record["s3"]["bucket"]["name"])
    except (ValueError, KeyError, IndexError, TypeError):
        return ""
