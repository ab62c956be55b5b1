"""A service's resources against its user's Kueue quota.

Kueue is on by default in OSCAR: a non-admin's jobs and exposed pods are
admitted only within their ClusterQueue, 2 CPU, 2Gi and 0 GPU unless an admin
raises it (grycap/oscar ``pkg/types/config.go``, ``pkg/utils/kueue.go``). A job
that asks for more never runs. Since v4.0 ``GET /system/quotas/user`` answers
``resources: {cpu: {max, used} (millicores), memory (bytes), gpu (units)}``
(``pkg/handlers/quotas.go``); the admin raises it with
``PUT /system/quotas/user/<user id>``.
"""

from __future__ import annotations

import re
from typing import Any

_MEMORY_UNITS = {
    "": 1, "k": 1000, "m": 1000**2, "g": 1000**3, "t": 1000**4,
    "ki": 1024, "mi": 1024**2, "gi": 1024**3, "ti": 1024**4,
}
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
