"""The claim on a request, as the app writes it when it hands the request to the per-job path.

A warm replica claims request ``<job>`` by creating ``<warm output>/<job>.started.json``
with ``If-None-Match: *`` (``oscar_sd/service/claims.py``). When the app moves a
request from the warm service to its per-job partner (spill-over, ``_spill.py``)
it creates that same object first, the same way: of the app and the replicas
exactly one wins. The app's claim names the per-job service in ``spilled_to``
and never expires: a replica that finds it never takes the request over.
"""

from __future__ import annotations

import json
import socket
from datetime import datetime, timezone

#: The field of a started marker that says the request went to the per-job service.
SPILLED_TO = "spilled_to"


def spill_claim(per_job_service: str) -> bytes:
    """The body of the app's claim on a request it hands to ``per_job_service``."""
    return json.dumps({
        "job": f"spilled to {per_job_service}",
        "host": socket.gethostname(),
        "started_at": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
        SPILLED_TO: per_job_service,
    }).encode()


def is_spilled(body: bytes) -> bool:
    """Whether a started marker's body is the app's spill claim."""
    try:
        return bool(json.loads(body).get(SPILLED_TO))
    except (ValueError, AttributeError):
        return False
