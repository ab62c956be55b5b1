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


def _job_of(key: str) -> str:
    """The job id a note's key names (the inverse of :func:`_key`)."""
    return key[len(PENDING):].removesuffix(".json")


#: Job ids whose notes this process wrote and has not deleted (nor left to the next
#: process): :func:`pending_runs` does not read them. With many logins of one account,
#: every page's read of the history read every other login's notes.
_ours: set[str] = set()


async def note_pending(
    history: History, job_id: str, request: GenerationRequest, service: str = ""
) -> None:
    body = json.dumps({"job_id": job_id, "created": time.time(), "service": service,
                       "request": request.to_payload()}).encode()
    _ours.add(job_id)
    await anyio.to_thread.run_sync(history.objects.put, _key(job_id), body)


def leave_pending(job_id: str) -> None:
    """The run's note stays for another process (or a later read) to take it up."""
    _ours.discard(job_id)


@dataclass
class _Drops:
    """The notes waiting to be deleted from one history's storage."""

    keys: list[str]
    deleting: bool = False


#: By history place (``History.place``): every login of one account shares one.
_drops: dict[str, _Drops] = {}


async def drop_pending(history: History, job_id: str) -> None:
    """Delete a run's note, together with those of the runs that ended meanwhile.

    Deletions of one history are grouped: while one multi-object delete is out,
    the notes of runs ending meanwhile wait, and the caller deleting sends them all
    in the next (one request for many runs, not one each). A note whose delete
    fails stays, and is dropped when a later process finds its run ended.
    """
    drops = _drops.setdefault(history.place, _Drops([]))
    drops.keys.append(_key(job_id))
    if drops.deleting:
        return  # the caller deleting now sends it with the next batch
    drops.deleting = True
    try:
        while drops.keys:
            keys, drops.keys = drops.keys, []
            try:
                await anyio.to_thread.run_sync(history.objects.remove, keys)
            finally:  # deleted, or left for a later read to find
                _ours.difference_update(map(_job_of, keys))
    finally:
        drops.deleting = False


async def pending_runs(history: History) -> list[PendingRun]:
    """The notes of this history, oldest first (unreadable ones are dropped), but for
    those of runs this process noted and still waits for or is deleting (not read)."""
    keys = await anyio.to_thread.run_sync(history.objects.list, PENDING)
    found: list[PendingRun] = []
    for key in keys:
        if _job_of(key) in _ours:
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
