"""Runs in flight, noted in the owner's history before their prompt is sent.

If the app stops (a rollout, an eviction, an OOM kill) while a run waits
for its job, the job goes on on the cluster and its result lands with no app
process waiting for it. The note (``pending/<job id>.json``: the request with
its seed, and when) lets the next app process that opens this history (the
owner signing in again, on any replica) pick the result up into the history
(``oscar_sd/_collect.py``). A note is dropped once its run ended here, or
once it is older than its deadline with nothing landed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Container
from dataclasses import dataclass

import anyio.to_thread

from .._models import GenerationRequest
from ._history import History

PENDING = "pending/"


@dataclass(frozen=True)
class PendingRun:
    job_id: str
    created: float
    request: GenerationRequest
    #: The OSCAR service the run went to (a login may offer several, one per model).
    service: str = ""

    @property
    def age(self) -> float:
        return time.time() - self.created


def _key(job_id: str) -> str:
    return f"{PENDING}{job_id}.json"


async def note_pending(
    history: History, job_id: str, request: GenerationRequest, service: str = ""
) -> None:
    body = json.dumps({"job_id": job_id, "created": time.time(), "service": service,
                       "request": request.to_payload()}).encode()
    await anyio.to_thread.run_sync(history.objects.put, _key(job_id), body)


async def drop_pending(history: History, job_id: str) -> None:
    await anyio.to_thread.run_sync(history.objects.remove, [_key(job_id)])


async def pending_runs(history: History, skip: Container[str] = ()) -> list[PendingRun]:
    """The notes of this history, oldest first (unreadable ones are dropped), but for
    those of the job ids in ``skip`` (runs this process is waiting for: not read)."""
    keys = await anyio.to_thread.run_sync(history.objects.list, PENDING)
    found: list[PendingRun] = []
    for key in keys:
        if key[len(PENDING):].removesuffix(".json") in skip:
            continue
        try:
            fields = json.loads(await anyio.to_thread.run_sync(history.objects.get, key))
            found.append(PendingRun(str(fields["job_id"]), float(fields["created"]),
                                    GenerationRequest(**fields["request"]),
                                    str(fields.get("service") or "")))
        except KeyError:
            continue
        except (ValueError, TypeError):
            await anyio.to_thread.run_sync(history.objects.remove, [key])
    return sorted(found, key=lambda run: run.created)
