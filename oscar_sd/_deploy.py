"""Deploying the Stable Diffusion service to OSCAR, and asking how it is doing.

``deploy_service`` does what ``oscar-cli apply`` does for one service: it reads
the service entry of an FDL file, inlines the script the entry names (relative
to the FDL), creates the service when the cluster lacks it or updates it when
it exists, then waits until the cluster lists the new definition.
``service_status`` reads a service and its recent jobs.

oscar-python is blocking: every call runs in a worker thread, never on the
event loop. Its HTTP errors are turned into the library's errors here, with
messages a person can act on and without any credential in them.

>>> import anyio, oscar_sd
>>> async def main():
...     deployed = await oscar_sd.deploy_service(
...         "https://oscar.example.org", user="alice", password="...",
...         fdl_path="manifests/stable-diffusion.yaml",
...     )
...     status = await oscar_sd.service_status(
...         "https://oscar.example.org", user="alice", password="...", service=deployed.name,
...     )
...     print(status.image, [job.status for job in status.jobs])
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import yaml

from ._cluster import OscarCluster
from ._deploy_prepare import (
    DeployRefused,
    access_warnings,
    needs_storage_keys,
    normalise_environment,
    with_access,
    with_root_path,
    with_storage_keys,
)
from ._errors import ClusterRequestError, OscarSDError
from ._quota import raise_hint, shortfalls
from ._tokens import OidcToken
from ._versions import NEWEST_KNOWN, OscarVersion, shape_for

#: Seconds ``deploy_service`` waits for the cluster to list the service.
DEFAULT_DEPLOY_WAIT = 300.0


class FDLError(OscarSDError, ValueError):
    """The FDL file cannot be read or does not hold exactly one usable service."""


class DeployError(OscarSDError):
    """The cluster accepted the service but did not list it before the deadline."""


@dataclass(frozen=True)
class DeployedService:
    """What ``deploy_service`` did."""

    name: str
    #: True when the service was created, False when an existing one was updated.
    created: bool
    #: The cluster's OSCAR release, e.g. "v4.1.2".
    version: str = ""
    #: What the caller should know (also said through ``on_progress``).
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class JobState:
    """One job of a service, as ``GET /system/logs/{service}`` reports it."""

    name: str
    #: Pending, Running, Succeeded, Failed (or whatever the cluster says).
    status: str
    creation_time: str | None = None
    start_time: str | None = None
    finish_time: str | None = None


@dataclass(frozen=True)
class ServiceStatus:
    """A service's definition (the parts people ask about) and its recent jobs."""

    name: str
    image: str
    gpu: bool
    cpu: str | None
    memory: str | None
    #: Storage paths "<bucket>/<folder>" the service reads from and writes to.
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    #: The most recent jobs first.
    jobs: list[JobState] = field(default_factory=list)
    #: How many jobs the cluster holds for the service (``jobs`` may be fewer).
    total_jobs: int = 0


# ---------------------------------------------------------------------------
# The FDL file


def load_fdl_service(fdl_path: str | Path, service: str | None = None) -> dict[str, Any]:
    """The service definition of an FDL file, ready for ``POST /system/services``.

    An FDL lists services under ``functions.oscar`` keyed by a cluster id; the
    id is ignored here because the cluster is the endpoint we were given (that
    is why this does not use oscar-python's ``create_service(path)``, which
    insists on the id). ``service`` picks one entry by name when there are
    several. The ``script`` is read relative to the FDL, as oscar-cli does.
    """
    path = Path(fdl_path)
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FDLError(f"No FDL file at {path}: pass --fdl with the path of one.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise FDLError(f"Cannot read the FDL file {path}: {exc.__class__.__name__}.") from None
    except yaml.YAMLError as exc:
        raise FDLError(f"The FDL file {path} is not valid YAML: {exc}") from None

    entries = _fdl_entries(document)
    if service is not None:
        entries = [entry for entry in entries if entry.get("name") == service]
    if len(entries) != 1:
        names = ", ".join(str(entry.get("name")) for entry in _fdl_entries(document)) or "none"
        wanted = f"a service named {service!r}" if service else "exactly one service"
        raise FDLError(f"The FDL file {path} must hold {wanted} under functions.oscar "
                       f"(it holds: {names}).")

    definition = dict(entries[0])
    for required in ("name", "image", "script"):
        if not definition.get(required):
            raise FDLError(f"The service in {path} has no {required!r}.")

    script_path = Path(definition["script"])
    if not script_path.is_absolute():
        script_path = path.parent / script_path
    try:
        definition["script"] = script_path.read_text(encoding="utf-8")
    except OSError:
        raise FDLError(f"Cannot read the script {script_path} named by {path}.") from None

    # OSCAR wants cpu as a string ("2.0"); YAML makes an unquoted 2 a number.
    if isinstance(definition.get("cpu"), (int, float)):
        definition["cpu"] = str(definition["cpu"])
    # `Variables:` (the spelling oscar-cli carries) is OSCAR's `variables`.
    definition = normalise_environment(definition)
    # Top-level storage providers belong to the service, as oscar-cli merges them.
    if isinstance(document, dict) and document.get("storage_providers"):
        definition.setdefault("storage_providers", document["storage_providers"])
    return definition


def _fdl_entries(document: Any) -> list[dict[str, Any]]:
    """Every service entry of ``functions.oscar``, whatever its cluster id."""
    try:
        clusters = document["functions"]["oscar"]
    except (TypeError, KeyError):
        return []
    entries: list[dict[str, Any]] = []
    for by_cluster in clusters or []:
        if isinstance(by_cluster, dict):
            entries.extend(svc for svc in by_cluster.values() if isinstance(svc, dict))
    return entries


# ---------------------------------------------------------------------------
# The public functions


async def deploy_service(
    endpoint: str,
    *,
    fdl_path: str | Path,
    user: str | None = None,
    password: str | None = None,
    token: str | OidcToken | None = None,
    service: str | None = None,
    verify_ssl: bool = True,
    wait_seconds: float = DEFAULT_DEPLOY_WAIT,
    on_progress: Callable[[str], None] | None = None,
    visibility: str | None = None,
    allowed_users: Sequence[str] | None = None,
    use_root_keys: bool = False,
) -> DeployedService:
    """Create or update the service of ``fdl_path`` on the cluster, then wait until it is listed.

    ``service`` picks the FDL entry by name when the file holds several. The
    definition is sent as the cluster's version takes it (``/system/info``). With a
    token the service is the person's own, shared as ``visibility`` (private,
    restricted, public) with ``allowed_users``; empty MinIO key secrets get their own
    keys. With the admin password they would be MinIO's root keys: that needs
    ``use_root_keys``. ``on_progress`` hears, in words, each step, what the wait
    waits for, and each warning (``"warning: ..."``: they are also in the result).
    Raises :class:`FDLError` for a bad file, :class:`DeployRefused`,
    :class:`AuthenticationError`, :class:`ClusterUnreachableError`,
    :class:`ClusterRequestError` when the cluster refuses the definition, or
    :class:`DeployError` when it does not list it within ``wait_seconds``.
    """
    say = on_progress or (lambda message: None)
    warnings: list[str] = []

    def warn(message: str) -> None:
        warnings.append(message)
        say(f"warning: {message}")

    definition = load_fdl_service(fdl_path, service)
    definition = with_access(definition, visibility, allowed_users)
    name = definition["name"]
    cluster = OscarCluster(
        endpoint, user=user, password=password, token=token, verify_ssl=verify_ssl
    )
    as_admin = cluster.token is None

    version = await cluster_version(cluster)
    say(f"the cluster runs OSCAR {version}: sending {version.expose_shape()}"
        if isinstance(definition.get("expose"), dict) else f"the cluster runs OSCAR {version}")
    for message in access_warnings(definition, as_admin):
        warn(message)
    if needs_storage_keys(definition):
        config = await cluster.config()
        definition = with_storage_keys(definition, config, as_admin=as_admin,
                                       use_root_keys=use_root_keys)
        if as_admin:
            warn(f"service {name!r} holds MinIO's root keys (--use-root-keys): every pod of it "
                 "can read and write every bucket of the cluster")
        else:
            say(f"filling service {name!r}'s MinIO keys with this account's own "
                "(from /system/config)")
    definition = with_root_path(definition, version)
    try:
        definition = shape_for(definition, version)
    except ValueError as exc:
        raise DeployRefused(f"Service {name!r}: {exc}") from None
    if not as_admin and version.has_quotas_api:
        for message in await quota_warnings(cluster, definition):
            warn(message)

    say(f"asking {cluster.endpoint} whether service {name!r} exists")
    created = await cluster.service(name) is None
    if created:
        say(f"creating service {name!r} (the cluster restarts its storage for that)")
        try:
            await cluster.create(definition)
        except ValueError:
            # oscar-python found it already there: someone created it in between.
            created = False
            say(f"service {name!r} appeared meanwhile: updating it")
            await cluster.update(definition)
    else:
        say(f"updating service {name!r}")
        await cluster.update(definition)

    await _wait_until_listed(cluster, definition, wait_seconds, say)
    return DeployedService(name=name, created=created, version=str(version),
                           warnings=tuple(warnings))


async def cluster_version(cluster: OscarCluster) -> OscarVersion:
    """The cluster's OSCAR release (``/system/info``); the newest known when it does not say."""
    return OscarVersion.parse((await cluster.info()).get("version")) or NEWEST_KNOWN


async def quota_warnings(cluster: OscarCluster, definition: dict[str, Any]) -> list[str]:
    """What one pod of ``definition`` asks beyond the caller's Kueue quota, as warnings."""
    try:
        quota = await cluster.own_quota()
    except ClusterRequestError:  # 503: Kueue is off on this cluster, nothing is queued
        return []
    if not quota:
        return []
    problems = shortfalls(definition, quota)
    if not problems:
        return []
    return [f"service {definition['name']!r} asks more than your quota "
            f"({'; '.join(problems)}): its jobs stay Suspended and never run. "
            f"Lower cpu/memory in the FDL, or {raise_hint(quota)}."]


#: Seconds between "still waiting" reports while the cluster does not list the service.
WAIT_REPORT_EVERY = 5.0


async def _wait_until_listed(
    cluster: OscarCluster, definition: dict[str, Any], wait_seconds: float,
    say: Callable[[str], None],
) -> None:
    """Return once the service list shows ``definition`` (its name with its image).

    OSCAR has no watch API for services, so this reads the list again with a
    growing pause between reads, until the deadline.
    """
    name, image = definition["name"], definition["image"]
    say(f"waiting for the cluster to list service {name!r} with image {image} "
        f"(up to {wait_seconds:g} s)")
    started = time.monotonic()
    next_report = started + WAIT_REPORT_EVERY
    pause = 0.05
    try:
        with anyio.fail_after(wait_seconds):
            while True:
                listed = await cluster.services()
                if any(svc.get("name") == name and svc.get("image") == image for svc in listed):
                    say(f"service {name!r} is listed ({time.monotonic() - started:.1f} s)")
                    return
                if time.monotonic() >= next_report:
                    next_report += WAIT_REPORT_EVERY
                    say(f"still waiting for the cluster to list service {name!r} with image "
                        f"{image} ({time.monotonic() - started:.0f} s of {wait_seconds:g})")
                await anyio.sleep(pause)
                pause = min(pause * 2, 2.0)
    except TimeoutError:
        raise DeployError(
            f"The cluster at {cluster.endpoint} accepted service {name!r} but did not list it "
            f"with image {image} within {wait_seconds:g} s. Check it later with `oscar-sd status`."
        ) from None


async def service_status(
    endpoint: str,
    *,
    user: str | None = None,
    password: str | None = None,
    token: str | OidcToken | None = None,
    service: str = "stable-diffusion",
    verify_ssl: bool = True,
    recent: int = 10,
) -> ServiceStatus:
    """The service's definition and its ``recent`` latest jobs with their states.

    Raises :class:`ServiceNotFoundError` (naming the services that exist),
    :class:`AuthenticationError`, :class:`ClusterUnreachableError` or
    :class:`ClusterRequestError`.
    """
    cluster = OscarCluster(
        endpoint, user=user, password=password, token=token, verify_ssl=verify_ssl
    )
    definition = await cluster.require_service(service)

    jobs = _job_states(await cluster.jobs(service))
    return ServiceStatus(
        name=definition.get("name", service),
        image=definition.get("image", ""),
        gpu=bool(definition.get("enable_gpu")),
        cpu=_text_or_none(definition.get("cpu")),
        memory=_text_or_none(definition.get("memory")),
        inputs=[io.get("path", "") for io in definition.get("input") or []],
        outputs=[io.get("path", "") for io in definition.get("output") or []],
        jobs=jobs[:recent],
        total_jobs=len(jobs),
    )


def _job_states(by_name: dict[str, Any]) -> list[JobState]:
    """Jobs by name as a list, newest first."""
    states = [
        JobState(
            name=name,
            status=str(info.get("status", "Unknown")),
            creation_time=info.get("creation_time"),
            start_time=info.get("start_time"),
            finish_time=info.get("finish_time"),
        )
        for name, info in by_name.items()
        if isinstance(info, dict)
    ]
    # RFC 3339 times from one cluster share a format, so text order is time order.
    states.sort(key=lambda job: job.creation_time or "", reverse=True)
    return states


def _text_or_none(value: Any) -> str | None:
    return None if value in (None, "") else str(value)
