"""What a warm replica reads from its environment (``manifests/stable-diffusion-warm.yaml``).

An exposed OSCAR service runs as a Deployment whose pods OSCAR builds from the
service definition (grycap/oscar ``pkg/types/expose.go``, ``getPodTemplateSpec``
→ ``service.ToPodSpec``): the definition's ``environment.variables`` and
``environment.secrets`` as environment variables, ``OSCAR_SERVICE_BASE_PATH``,
and the service's ConfigMap (``/oscar/config/function_config.yaml``: MinIO's
endpoint, its keys ``hidden``). The per-user MinIO secret that a job pod gets at
``/var/run/secrets/providers/minio.default`` is mounted by the job handler only
(``pkg/handlers/job.go``), not for exposed services. So::

    OSCAR_SD_INPUT_PATH     <bucket>/<folder> the app uploads prompts to (required)
    OSCAR_SD_OUTPUT_PATH    <bucket>/<folder> results go to (required)
    OSCAR_SD_MINIO_ACCESS_KEY, OSCAR_SD_MINIO_SECRET_KEY
                            the keys, from the FDL's environment.secrets (OSCAR keeps
                            them in a Kubernetes Secret); else the providers folder
                            (OSCAR_SD_PROVIDERS_DIR) when one is mounted
    OSCAR_SD_MINIO_ENDPOINT default: function_config.yaml's storage_providers.minio.
                            default.endpoint, else http://minio-service.minio:9000
    OSCAR_SD_PORT           the health endpoint's port (the FDL's expose.api_port), 8080
    OSCAR_SERVICE_BASE_PATH set by OSCAR: the health path is also served under it
    OSCAR_SD_CLAIM_TTL      seconds a claim lasts (default 600: 2x the longest batch)
    OSCAR_SD_RECONCILE_INTERVAL  seconds between looks at the input folder (default 5)
    OSCAR_SD_MAX_BATCH_IMAGES    images per pipeline call (default 24)
    OSCAR_SD_REPLICAS       how many replicas may run at once; default the definition's
                            expose.max_scale (OSCAR's default 10), 1 without one. A
                            replica refuses to start when claims cannot be exclusive
                            (the storage ignores If-None-Match: *) and this is above 1.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from .._storage import StoragePath
from .batch import max_batch_images_from_env
from .errors import ConfigurationError
from .marker import DEFAULT_MINIO_ENDPOINT, PROVIDERS_DIR, _function_config

DEFAULT_PORT = 8080
DEFAULT_CLAIM_TTL = 600.0
DEFAULT_RECONCILE_INTERVAL = 5.0


@dataclass(frozen=True)
class WarmSettings:
    """Everything one warm replica needs; :meth:`from_environment` reads it."""

    endpoint: str
    access_key: str = field(repr=False)
    secret_key: str = field(repr=False)
    input_path: StoragePath
    output_path: StoragePath
    region: str | None = None
    verify: bool = True
    model: str | None = None
    device: str | None = None
    port: int = DEFAULT_PORT
    host: str = "0.0.0.0"
    base_path: str = ""
    claim_ttl: float = DEFAULT_CLAIM_TTL
    reconcile_interval: float = DEFAULT_RECONCILE_INTERVAL
    max_batch_images: int = 24
    #: At most this many inputs are looked at per round (bounds one listing's cost).
    max_listed: int = 2000
    #: Seconds between a running request's progress writes (and looks for its cancel).
    progress_interval: float = 1.0
    #: This replica's name in its claims (the pod's host name).
    replica: str = field(default_factory=socket.gethostname)
    #: How many replicas may run at once (expose.max_scale): claims must be exclusive
    #: above 1.
    replicas: int = 1

    @classmethod
    def from_environment(cls) -> WarmSettings:
        """Read the settings; ConfigurationError saying what to set when one is missing."""
        env = os.environ
        input_path = env.get("OSCAR_SD_INPUT_PATH", "").strip()
        output_path = env.get("OSCAR_SD_OUTPUT_PATH", "").strip()
        missing = [name for name, value in (("OSCAR_SD_INPUT_PATH", input_path),
                                            ("OSCAR_SD_OUTPUT_PATH", output_path)) if not value]
        if missing:
            raise ConfigurationError(
                f"{' and '.join(missing)} not set: the warm service needs the folders it "
                "reads prompts from and writes images to, as <bucket>/<folder> "
                "(manifests/stable-diffusion-warm.yaml sets both)."
            )
        access_key, secret_key = _keys()
        config = _function_config()
        provider = ((config.get("storage_providers") or {}).get("minio") or {}).get(
            "default") or {}
        endpoint = (env.get("OSCAR_SD_MINIO_ENDPOINT", "").strip()
                    or str(provider.get("endpoint") or DEFAULT_MINIO_ENDPOINT))
        if "://" not in endpoint:
            endpoint = "https://" + endpoint
        urlsplit(endpoint)  # raises ValueError for a malformed one
        try:
            max_images = max_batch_images_from_env()
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from None
        return cls(
            endpoint=endpoint,
            access_key=access_key,
            secret_key=secret_key,
            input_path=StoragePath.parse(input_path),
            output_path=StoragePath.parse(output_path),
            region=provider.get("region") or None,
            verify=provider.get("verify", True) not in (False, "false", "False"),
            model=env.get("OSCAR_SD_MODEL") or None,
            device=env.get("OSCAR_SD_DEVICE") or None,
            port=_number("OSCAR_SD_PORT", DEFAULT_PORT, int),
            base_path=env.get("OSCAR_SERVICE_BASE_PATH", "").rstrip("/"),
            claim_ttl=_number("OSCAR_SD_CLAIM_TTL", DEFAULT_CLAIM_TTL, float),
            reconcile_interval=_number("OSCAR_SD_RECONCILE_INTERVAL",
                                       DEFAULT_RECONCILE_INTERVAL, float),
            max_batch_images=max_images,
            replicas=int(_number("OSCAR_SD_REPLICAS", _max_scale(config), int)),
        )


def _max_scale(config: dict) -> int:  # type: ignore[type-arg]
    """The definition's ``expose.max_scale`` (OSCAR's default 10); 1 without ``expose``."""
    expose = config.get("expose")
    if not isinstance(expose, dict):
        return 1
    try:
        return int(expose.get("max_scale") or 10)
    except (TypeError, ValueError):
        return 10


def _keys() -> tuple[str, str]:
    access = os.environ.get("OSCAR_SD_MINIO_ACCESS_KEY", "").strip()
    secret = os.environ.get("OSCAR_SD_MINIO_SECRET_KEY", "").strip()
    if access and secret:
        return access, secret
    folder = Path(os.environ.get("OSCAR_SD_PROVIDERS_DIR") or PROVIDERS_DIR)
    try:
        return ((folder / "accessKey").read_text().strip(),
                (folder / "secretKey").read_text().strip())
    except OSError:
        raise ConfigurationError(
            "No MinIO keys: set OSCAR_SD_MINIO_ACCESS_KEY and OSCAR_SD_MINIO_SECRET_KEY "
            "(the FDL's environment.secrets), or mount them at OSCAR_SD_PROVIDERS_DIR."
        ) from None


def _number(name: str, default: float, kind: type) -> float | int:  # type: ignore[type-arg]
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or value < 0:
        raise ConfigurationError(f"{name}={text!r} is not a number >= 0; unset it for {default}")
    return value  # type: ignore[no-any-return]
