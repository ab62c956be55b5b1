"""OSCAR's cluster-wide routes the operator asks: ``/system/status`` and the quotas API.

``GET /system/status`` (grycap/oscar ``pkg/handlers/status.go``, types in
``pkg/types/status.go`` since v4.0, in the handler itself in v3.6.5): the
cluster's nodes and free resources, ``cluster.metrics.gpu.total_gpu`` the GPUs
of all nodes; the OSCAR and MinIO parts only for the admin.

The quotas API exists since v4.0.0 (``main.go``; ``pkg/handlers/quotas.go``):
``GET /system/quotas/user`` answers the bearer user's own ClusterQueue,
``GET|PUT /system/quotas/user/:userId`` is for the admin (basic auth) only, 403
otherwise. Values: CPU in millicores, memory in bytes, GPUs in units, under
``resources`` as ``{max, used}``. A user's ClusterQueue starts at OSCAR's
defaults, 2 CPU, 2Gi, 0 GPU (``pkg/types/config.go``, ``pkg/utils/kueue.go``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from flask import Flask, Response, request

from . import versions

if TYPE_CHECKING:
    from .cluster import ClusterDouble

#: A user's ClusterQueue before an admin sets it (OSCAR's Kueue defaults).
DEFAULT_QUOTA = {"cpu": 2000, "memory": 2 * 1024**3, "gpu": 0}


def _json(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body), status=status, mimetype="application/json")


def _text(body: str, status: int) -> Response:
    return Response(body, status=status, mimetype="text/plain")


def quota_of(double: ClusterDouble, uid: str) -> dict[str, int]:
    return {**DEFAULT_QUOTA, **double.user_quotas.get(uid, {})}


def _quota_answer(double: ClusterDouble, uid: str) -> dict[str, Any]:
    quota, used = quota_of(double, uid), double.kueue.used(uid)  # admitted jobs (kueue.py)
    in_use = {"cpu": round(used.cpu * 1000), "memory": int(used.memory), "gpu": used.gpu}
    return {"user_id": uid, "cluster_queue": f"oscar-cq-{uid[:20]}",
            "resources": {name: {"max": value, "used": in_use[name]}
                          for name, value in quota.items()}}


def _parse_update(body: Any) -> dict[str, int] | None:
    """QuotaUpdateRequest: cpu (millicores) and memory (bytes) as strings, gpu (units)."""
    if not isinstance(body, dict):
        return None
    update: dict[str, int] = {}
    for name in ("cpu", "memory", "gpu"):
        if body.get(name) not in (None, ""):
            try:
                update[name] = int(str(body[name]))
            except ValueError:
                return None
    return update or None


def add_system_routes(app: Flask, double: ClusterDouble,
                      oidc_user: Callable[[], str | None]) -> None:
    @app.get("/system/status")
    def status() -> Response:
        # With a capacity model its GPU pool is the cluster's GPUs (capacity.py).
        gpus = double.capacity.gpus if double.capacity is not None else double.gpus
        node = {"name": "double-node", "cpu": {"capacity_cores": 8000, "usage_cores": 0},
                "memory": {"capacity_bytes": 32 * 1024**3, "usage_bytes": 0},
                "gpu": gpus, "is_interlink": False, "status": "Ready",
                "conditions": [{"type": "Ready", "status": True}]}
        answer: dict[str, Any] = {"cluster": {
            "nodes_count": 1, "nodes": [node],
            "metrics": {"cpu": {"total_free_cores": 8000, "max_free_on_node_cores": 8000},
                        "memory": {"total_free_bytes": 32 * 1024**3,
                                   "max_free_on_node_bytes": 32 * 1024**3},
                        "gpu": {"total_gpu": gpus}}}}
        if oidc_user() is None:  # the admin also sees OSCAR's own deployment
            answer["oscar"] = {"deployment_name": "oscar", "ready": True}
        return _json(answer)

    def quotas_api() -> Response | None:
        if not versions.has_quotas_api(double.oscar_version):
            return _text("404 page not found", 404)  # gin's answer for a route it lacks
        return None

    @app.get("/system/quotas/user")
    def own_quota() -> Response:
        missing = quotas_api()
        if missing is not None:
            return missing
        uid = oidc_user()
        if uid is None:
            return _text("missing user identificator: no bearer user", 401)
        return _json(_quota_answer(double, uid))

    @app.get("/system/quotas/user/<uid>")
    def user_quota(uid: str) -> Response:
        missing = quotas_api()
        if missing is not None:
            return missing
        if oidc_user() is not None:
            return _text("forbidden", 403)
        return _json(_quota_answer(double, uid))

    @app.put("/system/quotas/user/<uid>")
    def set_user_quota(uid: str) -> Response:
        missing = quotas_api()
        if missing is not None:
            return missing
        if oidc_user() is not None:
            return _text("forbidden", 403)
        update = _parse_update(request.get_json(force=True, silent=True))
        if update is None:
            return _text("at least one of cpu, memory or volumes must be provided", 400)
        double.set_quota(uid, **update)  # and Kueue admits the jobs that now fit
        return _json(_quota_answer(double, uid))
