"""A service's resources against its user's Kueue quota.

Kueue is on by default in OSCAR: a non-admin's jobs and exposed pods are
admitted only within their ClusterQueue, 2 CPU, 2Gi and 0 GPU unless an admin
raises it (grycap/oscar ``pkg/types/config.go``, ``pkg/utils/kueue.go``). A job
that asks for more never runs. Since v4.0 ``GET /system/quotas/user`` answers
``resources: {cpu: {max, used} (millicores), memory (bytes), gpu (units)}``
(``pkg/handlers/quotas.go``); the admin raises it with
``PUT /system/quotas/user/<user id>``.

While Kueue has not admitted a job, OSCAR lists it as ``Suspended`` (it has no
pod yet, ``pkg/handlers/logs.go``): jobs of services the admin does not own
start so (``pkg/handlers/job.go``). :func:`quota_message` is what a request
says when its job stays Suspended too long (:mod:`._jobwatch`).
"""

from __future__ import annotations

import json
import re
from typing import Any

_MEMORY_UNITS = {
    "": 1, "k": 1000, "m": 1000**2, "g": 1000**3, "t": 1000**4,
    "ki": 1024, "mi": 1024**2, "gi": 1024**3, "ti": 1024**4,
}
#: OSCAR's status of a job Kueue has not admitted.
SUSPENDED = "Suspended"
#: The page's name for the stage.
WAITING_FOR_QUOTA = "Waiting for the cluster's quota"
#: OSCAR's default per-user ClusterQueue (pkg/types/config.go).
DEFAULT_QUOTA = "2 CPU, 2Gi of memory and no GPU"
_QUANTITY = re.compile(r"^\s*([0-9.]+)\s*([a-zA-Z]*)\s*$")


def cpu_millicores(value: Any) -> int | None:
    """Kubernetes CPU (``"4"``, ``"0.5"``, ``"500m"``) in millicores; None if unreadable."""
    match = _QUANTITY.match(str(value or ""))
    if match is None:
        return None
    number, unit = float(match.group(1)), match.group(2)
    if unit == "m":
        return int(number)
    return int(number * 1000) if unit == "" else None


def memory_bytes(value: Any) -> int | None:
    """Kubernetes memory (``"12Gi"``, ``"2G"``, ``"512Mi"``) in bytes; None if unreadable."""
    match = _QUANTITY.match(str(value or ""))
    if match is None or match.group(2).lower() not in _MEMORY_UNITS:
        return None
    return int(float(match.group(1)) * _MEMORY_UNITS[match.group(2).lower()])


def _gib(value: int) -> str:
    return f"{value / 1024**3:g}Gi"


def shortfalls(definition: dict[str, Any], quota: dict[str, Any]) -> list[str]:
    """What one pod of ``definition`` asks beyond ``quota``, in words; empty when it fits."""
    resources = quota.get("resources") or {}

    def limit(name: str) -> int | None:
        entry = resources.get(name)
        return int(entry["max"]) if isinstance(entry, dict) and "max" in entry else None

    problems: list[str] = []
    asked_cpu, max_cpu = cpu_millicores(definition.get("cpu")), limit("cpu")
    if asked_cpu is not None and max_cpu is not None and asked_cpu > max_cpu:
        problems.append(f"{asked_cpu / 1000:g} CPU asked, the quota allows {max_cpu / 1000:g}")
    asked_memory, max_memory = memory_bytes(definition.get("memory")), limit("memory")
    if asked_memory is not None and max_memory is not None and asked_memory > max_memory:
        problems.append(f"{_gib(asked_memory)} memory asked, the quota allows {_gib(max_memory)}")
    max_gpu = limit("gpu")
    if definition.get("enable_gpu") and max_gpu is not None and max_gpu < 1:
        problems.append(f"1 GPU asked, the quota allows {max_gpu}")
    return problems


def raise_hint(quota: dict[str, Any]) -> str:
    """How the cluster's admin raises this user's quota."""
    user = quota.get("user_id") or "<user id>"
    return (f"ask the cluster's admin to raise it: PUT /system/quotas/user/{user} with "
            '{"cpu": "<millicores>", "memory": "<bytes>", "gpu": "<GPUs>"}')


def quota_message(definition: dict[str, Any] | None, waited: float) -> str:
    """The error for a request whose job stayed Suspended ``waited`` seconds."""
    definition = definition or {}
    owner = str(definition.get("owner") or "<the service's owner>")
    cpu, memory = str(definition.get("cpu") or "?"), str(definition.get("memory") or "?")
    gpu = 1 if definition.get("enable_gpu") else 0
    asks = f"{cpu} CPU, {memory} of memory and {'1 GPU' if gpu else 'no GPU'}"
    body = {"cpu": cpu, "memory": memory, **({"gpu": str(gpu)} if gpu else {})}
    return (
        f"Not run: the cluster's quota does not admit this service's jobs. OSCAR's Kueue "
        f"kept the job Suspended for {waited:.0f} s: each job asks for {asks}, more than "
        f"the quota of the service's owner ({owner}) allows (OSCAR's default per user is "
        f"{DEFAULT_QUOTA}). A cluster admin raises it with PUT /system/quotas/user/{owner} "
        f"{json.dumps(body)} (OSCAR v4), or the service can ask for less."
    )
