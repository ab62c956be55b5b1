"""``oscar-sd doctor``: can people use this cluster's service? A checklist for the operator.

Run it with the identity people will have (an OIDC user's token, or the admin
password on a basic-auth-only cluster) before inviting them:

>>> import anyio, oscar_sd
>>> report = anyio.run(lambda: oscar_sd.doctor(                      # doctest: +SKIP
...     "https://oscar.example.org", token="...", service="stable-diffusion"))
>>> print(report.text()); report.ok                                  # doctest: +SKIP

Each check is ``ok``, ``fail`` (with the fix) or ``skip`` (does not apply here, or
an earlier failure makes it meaningless). ``report.ok`` is True only when no
check failed. Operator detail lives here and in the log, not on the page.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

import anyio
import anyio.to_thread

from . import _doctor_storage as storage_checks
from ._cluster import OscarCluster
from ._deploy import cluster_version
from ._doctor_pair import pair_check
from ._errors import AuthenticationError, ClusterUnreachableError, OscarSDError
from ._quota import raise_hint, shortfalls
from ._service_paths import service_paths
from ._storage import MinioStorage
from ._tokens import OidcToken
from ._versions import OscarVersion

#: How long the checklist waits for storage that does not answer (a MinIO restart
#: lasts a moment; a storage that is down gets its ✘ soon).
DOCTOR_OUTAGE = 5.0
MARKS = {"ok": "✔", "fail": "✘", "skip": "–"}


@dataclass(frozen=True)
class Check:
    """One line of the checklist."""

    name: str
    #: "ok", "fail" or "skip".
    status: str
    detail: str
    #: What to do about it (failures only).
    fix: str = ""


@dataclass(frozen=True)
class DoctorReport:
    """Every check, in order; ``ok`` only when none failed."""

    endpoint: str
    service: str
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(check.status != "fail" for check in self.checks)

    def as_dict(self) -> dict[str, Any]:
        return {"endpoint": self.endpoint, "service": self.service, "ok": self.ok,
                "checks": [asdict(check) for check in self.checks]}

    def text(self) -> str:
        lines = [f"oscar-sd doctor: {self.service} on {self.endpoint}"]
        for check in self.checks:
            lines.append(f"{MARKS[check.status]} {check.name}: {check.detail}")
            if check.fix:
                lines.append(f"    fix: {check.fix}")
        verdict = ("people can use it" if self.ok
                   else f"{sum(c.status == 'fail' for c in self.checks)} problem(s): "
                        "people cannot use it yet")
        lines.append(verdict)
        return "\n".join(lines)


class _Checklist:
    """Collects checks; after a failure that stops the rest, the others are skipped."""

    def __init__(self, report: DoctorReport) -> None:
        self.report = report

    def add(self, name: str, status: str, detail: str, fix: str = "") -> bool:
        self.report.checks.append(Check(name, status, detail, fix))
        return status != "fail"

    def skip_rest(self, names: list[str], why: str) -> None:
        for name in names:
            if not any(check.name == name for check in self.report.checks):
                self.add(name, "skip", why)


ALL_CHECKS = ["reachable", "version", "auth", "service", "buckets", "notifications",
              "conditional PUT", "quota", "GPUs", "warm health", "spill-over pair",
              "test request"]


async def doctor(
    endpoint: str,
    *,
    user: str | None = None,
    password: str | None = None,
    token: str | OidcToken | None = None,
    service: str = "stable-diffusion",
    verify_ssl: bool = True,
    test_request: bool = True,
    request_timeout: float = 300.0,
    call_timeout: float = 15.0,
) -> DoctorReport:
    """Check the cluster and ``service`` as this identity; see the module's docstring.

    ``test_request`` sends one small request end to end (one 64x64 image) and
    times it, within ``request_timeout`` seconds. Raises only for missing credentials.
    """
    cluster = OscarCluster(endpoint, user=user, password=password, token=token,
                           verify_ssl=verify_ssl, limit=call_timeout)
    report = DoctorReport(cluster.endpoint, service)
    checks = _Checklist(report)
    try:
        await _run(cluster, checks, service, verify_ssl=verify_ssl,
                   test_request=test_request, request_timeout=request_timeout,
                   credentials={"user": user, "password": password, "token": token})
    finally:
        checks.skip_rest(ALL_CHECKS, "not checked: fix the problem above first")
        report.checks.sort(key=lambda check: ALL_CHECKS.index(check.name))
    return report


async def _run(cluster: OscarCluster, checks: _Checklist, service: str, *, verify_ssl: bool,
               test_request: bool, request_timeout: float,
               credentials: dict[str, Any]) -> None:
    started = time.monotonic()
    try:
        await cluster.call(cluster.client.health_check, what="check the cluster's health")
    except ClusterUnreachableError as exc:
        checks.add("reachable", "fail", str(exc), "check the URL, the network and the cluster")
        return
    checks.add("reachable", "ok", f"{cluster.endpoint} answers /health "
               f"({time.monotonic() - started:.2f} s)")

    try:
        version = await cluster_version(cluster)
        config = await cluster.config()
    except AuthenticationError as exc:
        checks.add("version", "skip", "not readable without accepted credentials")
        checks.add("auth", "fail", str(exc), _auth_fix(cluster))
        return
    checks.add("version", "ok", f"OSCAR {version}: FDLs need {version.expose_shape()}, "
               "no nodePort" + ("; oscar-cli apply cannot deploy here (it sends numbers and "
                                "nodePort 0), use oscar-sd deploy"
                                if version.ports_are_lists else ""))
    provider = config.get("minio_provider") or {}
    as_admin = cluster.token is None
    uid = None if as_admin else str(provider.get("access_key") or "")
    groups = list(config.get("oidc_groups") or (config.get("config") or {}).get(
        "oidc_groups") or [])
    who = "basic auth: the cluster's one admin account" if as_admin else f"OIDC user {uid}"
    checks.add("auth", "ok", f"{who}; OIDC groups admitted: "
               + (", ".join(groups) if groups else "none listed"))

    try:
        definition = await cluster.service(service)
    except AuthenticationError:  # 403: it exists, and is not open to this identity (read.go)
        checks.add("service", "fail",
                   f"{service!r} exists but is not open to this identity (HTTP 403)",
                   "its owner shares it: oscar-sd deploy --token <owner's> --visibility "
                   "restricted --allowed-users <this user's id> (or public)")
        return
    if definition is None:
        names = [str(svc.get("name")) for svc in await cluster.services()]
        checks.add("service", "fail",
                   f"{service!r} is not there for this identity (it sees: "
                   f"{', '.join(names) or 'none'})",
                   "deploy it (oscar-sd deploy; with --token to own it and share it with "
                   "--visibility/--allowed-users), or name the right one with --service")
        return
    checks.add("service", "ok", _describe_access(definition, as_admin))

    await _storage_checks(checks, definition, provider, uid, verify_ssl)
    await _quota_check(checks, cluster, definition, version, uid)
    await _gpu_check(checks, cluster, definition)
    await _health_check(checks, cluster, definition, version)
    await pair_check(checks, cluster, definition, version)
    if not test_request:
        checks.add("test request", "skip", "not asked for (--no-request)")
    elif report_ok_so_far(checks):
        await _test_request(checks, cluster.endpoint, service, verify_ssl, request_timeout,
                            credentials)
    else:
        checks.add("test request", "skip", "not sent: fix the problems above first")


def report_ok_so_far(checks: _Checklist) -> bool:
    # A listen refusal leaves the app working (listing-only): the request still tells.
    return all(check.status != "fail" or check.name == "notifications"
               for check in checks.report.checks)


def _auth_fix(cluster: OscarCluster) -> str:
    if cluster.token is None:
        return "use the admin user name and password OSCAR was installed with"
    return ("sign in again for a fresh token; a person in none of the cluster's OIDC groups "
            "is refused: ask the operator which groups it admits (/system/config oidc_groups)")


def _describe_access(definition: dict[str, Any], as_admin: bool) -> str:
    owner = definition.get("owner") or "unknown"
    visibility = definition.get("visibility") or "private"
    isolation = str(definition.get("isolation_level") or "SERVICE").upper()
    allowed = definition.get("allowed_users") or []
    text = (f"{definition.get('name')!r} owned by {owner}, {visibility}, isolation {isolation}"
            + (f", {len(allowed)} allowed user(s)" if allowed else ""))
    if as_admin and owner == "cluster_admin":
        text += ("; OIDC users get no storage access to an admin's service: deploy it with "
                 "a token to share it with people")
    return text


async def _storage_checks(checks: _Checklist, definition: dict[str, Any],
                          provider: dict[str, Any], uid: str | None, verify_ssl: bool) -> bool:
    """Buckets, then (when they work) notifications and conditional PUT; False when the
    buckets are unusable."""
    if not provider.get("endpoint") or not provider.get("access_key"):
        return checks.add("buckets", "fail", "/system/config reports no MinIO storage",
                          "check OSCAR's MinIO settings")
    try:
        input_path, output_path = service_paths(definition, uid)
    except OscarSDError as exc:
        return checks.add("buckets", "fail", str(exc), "fix the service's definition")
    storage = MinioStorage(provider["endpoint"], provider["access_key"],
                           str(provider.get("secret_key") or ""),
                           region=provider.get("region") or None,
                           verify=bool(provider.get("verify", True)) and verify_ssl,
                           outage_timeout=DOCTOR_OUTAGE)  # a restart is ridden out, no more

    async def in_thread(check: Callable[..., Any], *args: Any) -> Any:
        return await anyio.to_thread.run_sync(partial(check, storage, *args))

    try:
        buckets = await in_thread(storage_checks.check_buckets, input_path, output_path)
    except Exception as exc:  # unreachable storage: say so, in words
        return checks.add("buckets", "fail", f"cannot reach the storage at "
                          f"{storage.endpoint} ({type(exc).__name__})",
                          "the MinIO endpoint /system/config reports must be reachable "
                          "from here")
    if not checks.add("buckets", "ok" if buckets.ok else "fail", buckets.detail, buckets.fix):
        return False
    listen = await in_thread(storage_checks.check_listen, output_path)
    checks.add("notifications", "ok" if listen.ok else "fail", listen.detail, listen.fix)

    probe = await in_thread(storage_checks.check_conditional_put, output_path)
    warm = _is_exposed(definition)
    if probe.honoured:
        checks.add("conditional PUT", "ok", "a second If-None-Match: * PUT is refused (412)")
    elif warm:
        checks.add("conditional PUT", "fail", probe.problem, probe.fix)
    else:
        checks.add("conditional PUT", "skip", f"{probe.problem} (only warm replicas claim: "
                   "a per-job service does not need it)")
    return True


def _is_exposed(definition: dict[str, Any]) -> bool:
    expose = definition.get("expose")
    return isinstance(expose, dict) and bool(expose.get("api_port"))


async def _quota_check(checks: _Checklist, cluster: OscarCluster, definition: dict[str, Any],
                       version: OscarVersion, uid: str | None) -> None:
    """The service owner's Kueue quota against one pod: Kueue queues a service's jobs
    in its owner's ClusterQueue (grycap/oscar create.go EnsureKueueUserQueues)."""
    owner = str(definition.get("owner") or "")
    if owner in ("", "cluster_admin"):
        checks.add("quota", "skip", "the admin's services run outside Kueue's user quotas")
        return
    if not version.has_quotas_api:
        checks.add("quota", "skip", f"OSCAR {version} has no quotas API (since v4.0)")
        return
    if uid is not None and uid != owner:
        checks.add("quota", "skip", f"the owner's ({owner}) quota applies: run doctor as "
                   "the owner or with the admin password to see it")
        return
    try:
        quota = await (cluster.own_quota() if uid == owner else cluster.user_quota(owner))
    except OscarSDError as exc:
        checks.add("quota", "skip", f"not readable ({exc})")
        return
    if not quota:
        checks.add("quota", "skip", "the cluster has no quotas API")
        return
    problems = shortfalls(definition, quota)
    if problems:
        checks.add("quota", "fail", f"one pod of the service asks more than its owner's "
                   f"quota ({'; '.join(problems)}): its jobs stay Suspended, never run",
                   f"lower cpu/memory in the FDL, or {raise_hint(quota)}")
    else:
        checks.add("quota", "ok", f"one pod of the service fits its owner's ({owner}) quota")


async def _gpu_check(checks: _Checklist, cluster: OscarCluster,
                     definition: dict[str, Any]) -> None:
    try:
        status = await cluster.status()
    except OscarSDError as exc:
        checks.add("GPUs", "skip", f"/system/status not readable ({exc})")
        return
    gpus = (((status or {}).get("cluster") or {}).get("metrics") or {}).get("gpu") or {}
    total = gpus.get("total_gpu")
    if total is None:
        checks.add("GPUs", "skip", "/system/status reports no GPU count")
    elif definition.get("enable_gpu") and int(total) < 1:
        checks.add("GPUs", "fail", "the service asks for a GPU and the cluster has none",
                   "add a GPU node (with the NVIDIA device plugin), or deploy without "
                   "enable_gpu (slow: CPU)")
    else:
        checks.add("GPUs", "ok", f"{total} GPU(s) on the cluster's nodes")


async def _health_check(checks: _Checklist, cluster: OscarCluster,
                        definition: dict[str, Any], version: OscarVersion) -> None:
    name = definition.get("name", "")
    if not _is_exposed(definition):
        checks.add("warm health", "skip", "a per-job service: nothing runs between requests")
        return
    if not version.sets_base_path:  # no deployment status before v4.0
        checks.add("warm health", "skip",
                   f"OSCAR {version} reports no deployment status; open "
                   f"{cluster.endpoint}/system/services/{name}/exposed/ yourself")
        return
    response = await cluster.call(cluster.client.get_deployment_status, name,
                                  what=f"read the deployment of {name!r}", missing_ok=True)
    state = (response.json() if response is not None else {}) or {}
    if str(state.get("state") or "") == "ready":
        checks.add("warm health", "ok", f"deployment ready ({state.get('reason') or 'ok'})")
    else:
        checks.add("warm health", "fail",
                   f"deployment {state.get('state') or 'missing'}: "
                   f"{state.get('reason') or 'no replica is available'}",
                   f"read its log (GET /system/services/{name}/deployment/logs) and its "
                   "/health; start it (POST /system/services/<name>/start, v4.1)")


async def _test_request(checks: _Checklist, endpoint: str, service: str, verify_ssl: bool,
                        request_timeout: float, credentials: dict[str, Any]) -> None:
    from ._models import GenerationRequest  # the library's own client, as people use it
    from ._oscar import OscarSD

    started = time.monotonic()
    try:
        with anyio.fail_after(request_timeout + 30):
            async with OscarSD.connect(endpoint, **credentials, service=service,
                                       verify_ssl=verify_ssl, timeout=request_timeout) as sd:
                result = await sd.generate(GenerationRequest(
                    prompt="oscar-sd doctor: a test image", num_images=1, steps=1,
                    width=64, height=64, seed=1))
                result.cleanup()
    except (OscarSDError, TimeoutError) as exc:
        checks.add("test request", "fail", f"{type(exc).__name__}: {exc}",
                   "read the job's log with `oscar-sd status` and the checks above")
        return
    checks.add("test request", "ok", f"one image end to end in {time.monotonic() - started:.1f} s")

