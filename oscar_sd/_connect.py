"""Connecting to a service: log in, read its definition and storage, join its hub.

:meth:`OscarSD.connect <oscar_sd.OscarSD.connect>` gathers the options and
hands them to :func:`open_connection`; what comes back is everything a
connected client holds. The MinIO keys that ``/system/config`` reports stay
in here and in the storage client: never in a message or a log line.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Awaitable, Generator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import anyio
import anyio.to_thread
from minio.error import S3Error

from ._cluster import OscarCluster
from ._errors import (
    AuthenticationError,
    ClusterUnreachableError,
    OscarSDError,
    ServiceMisconfiguredError,
    ServiceNotAvailableError,
    ServiceNotFoundError,
)
from ._limits import StorageLimits
from ._notify.backoff import Backoff
from ._notify.hub import NotificationHub, StreamAddress, get_hub
from ._service_paths import service_paths
from ._storage import MinioStorage, StoragePath, storage_error
from ._tokens import OidcToken

log = logging.getLogger("oscar_sd")


@dataclass(frozen=True)
class Connection:
    """A logged-in cluster, the service's folders, and the storage behind them."""

    cluster: OscarCluster
    storage: MinioStorage
    hub: NotificationHub
    input_path: StoragePath
    output_path: StoragePath
    limits: StorageLimits
    results_dir: Path
    #: Strings never repeated from a job's log: the job pods hold these keys.
    hidden: tuple[str, ...]
    #: The OIDC user's uid (their MinIO access key); None with basic auth.
    uid: str | None = None
    #: The model the service runs, from its ``OSCAR_SD_MODEL`` variable (None if unset).
    model: str | None = None


async def open_connection(
    endpoint: str,
    *,
    user: str | None,
    password: str | None,
    token: str | OidcToken | None,
    keep_password: bool,
    service: str,
    verify_ssl: bool,
    connect_timeout: float,
    stall_timeout: float,
    outage_timeout: float,
    backoff: Backoff | None,
    storage_threads: int,
    results_dir: str | Path | None,
) -> Connection:
    """Log in, find ``service`` and its storage, and check that its output bucket exists.

    Raises :class:`AuthenticationError`, :class:`ServiceNotFoundError`,
    :class:`ServiceMisconfiguredError` or :class:`ClusterUnreachableError`.
    """
    cluster = OscarCluster(
        endpoint,
        user=user,
        password=password,
        token=token,
        verify_ssl=verify_ssl,
        limit=connect_timeout,
    )
    config = await cluster.config()
    definition = await _service_for(cluster, service)

    provider = config.get("minio_provider") or {}
    if not provider.get("endpoint") or not provider.get("access_key"):
        raise ServiceMisconfiguredError(
            "The cluster did not report its MinIO storage (/system/config has no "
            "minio_provider). Ask the cluster administrator to check the OSCAR setup."
        )
    # An OIDC user's MinIO access key is their uid (docs/multitenancy.md).
    uid = provider["access_key"] if cluster.token is not None else None
    input_path, output_path = service_paths(definition, uid)
    if not keep_password:
        cluster.forget_password()
    storage = MinioStorage(
        provider["endpoint"],
        provider["access_key"],
        provider.get("secret_key", ""),
        region=provider.get("region") or None,
        verify=bool(provider.get("verify", True)) and verify_ssl,
        stall_timeout=stall_timeout,
        pool_size=StorageLimits.pool_size(storage_threads),
        outage_timeout=outage_timeout,
        backoff=backoff,
    )
    limits = StorageLimits.create(storage_threads)
    await _require_bucket(storage, output_path.bucket, service, connect_timeout, limits)

    address = StreamAddress(
        storage.endpoint, output_path.bucket, output_path.prefix, provider["access_key"]
    )
    hub = get_hub(address, storage.for_hub, **({"backoff": backoff} if backoff else {}))
    results = Path(results_dir or Path(tempfile.gettempdir()) / "oscar-sd-results")
    await anyio.to_thread.run_sync(
        partial(results.mkdir, parents=True, exist_ok=True), limiter=limits.results
    )
    return Connection(
        cluster=cluster,
        storage=storage,
        hub=hub,
        input_path=input_path,
        output_path=output_path,
        limits=limits,
        results_dir=results,
        hidden=(str(provider["access_key"]), str(provider.get("secret_key") or "")),
        uid=uid,
        model=model_of(definition),
    )


async def _service_for(cluster: OscarCluster, service: str) -> dict[str, Any]:
    """The service's definition. A person (a token) who may not see it is told only that it
    is not available to them; what the operator needs goes to the log."""
    try:
        return await cluster.require_service(service)
    except (ServiceNotFoundError, AuthenticationError) as exc:
        if cluster.token is None:
            raise  # the admin can act on the detail: deploy it, pick another
        log.warning("service %r is not open to this OIDC user: %s (the operator can check "
                    "with `oscar-sd doctor --token ...`)", service, exc)
        raise ServiceNotAvailableError(service) from None


def model_of(definition: dict[str, Any]) -> str | None:
    """The model a service definition names: its ``OSCAR_SD_MODEL_NAME`` variable (the
    label the worker writes into the images), else ``OSCAR_SD_MODEL`` (a hub id, or
    the folder the image bakes the weights into)."""
    environment = definition.get("environment") or {}
    variables = environment.get("variables") or environment.get("Variables") or {}
    if not isinstance(variables, dict):
        return None
    for name in ("OSCAR_SD_MODEL_NAME", "OSCAR_SD_MODEL"):
        model = str(variables.get(name) or "").strip()
        if model:
            return model
    return None


async def _require_bucket(
    storage: MinioStorage, bucket: str, service: str, limit: float, limits: StorageLimits
) -> None:
    """The first storage call: it proves the keys work and the service's output exists."""
    try:
        with anyio.fail_after(limit):
            exists = await anyio.to_thread.run_sync(
                storage.check_bucket, bucket, abandon_on_cancel=True, limiter=limits.requests
            )
    except TimeoutError:
        raise ClusterUnreachableError(
            f"The cluster's storage (MinIO) at {storage.endpoint} did not answer within "
            f"{limit:g} s. Check that the cluster is up."
        ) from None
    except OscarSDError:
        raise
    except S3Error as exc:
        if exc.code != "AccessDenied":
            raise storage_error(exc, storage.endpoint) from None
        # No MinIO policy for this user on the bucket (an admin's service: grycap/oscar
        # create.go writes none): the person can do nothing about it but ask.
        log.warning("the storage refuses this account the bucket %r of service %r "
                    "(AccessDenied): no MinIO policy for it; `oscar-sd doctor` shows why",
                    bucket, service)
        raise ServiceNotAvailableError(service) from None
    except Exception as exc:
        raise storage_error(exc, storage.endpoint) from None
    if not exists:
        raise ServiceMisconfiguredError(
            f"The output bucket {bucket!r} of service {service!r} does not exist. "
            "Redeploy the service (`oscar-sd deploy`)."
        )


class _Closable(Protocol):
    async def aclose(self) -> None: ...


ClientT = TypeVar("ClientT", bound=_Closable)


class Connecting(Generic[ClientT]):
    """What :meth:`OscarSD.connect` returns: await it, or use it with ``async with``."""

    def __init__(self, opening: Awaitable[ClientT]) -> None:
        self._opening = opening
        self._client: ClientT | None = None

    def __await__(self) -> Generator[Any, None, ClientT]:
        return self._opening.__await__()

    async def __aenter__(self) -> ClientT:
        self._client = await self._opening
        return self._client

    async def __aexit__(self, *exc_info: object) -> None:
        if self._client is not None:
            await self._client.aclose()
