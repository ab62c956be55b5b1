"""The orphan sweep: objects of requests nobody runs any more, removed after a grace.

A request deletes its input, marker and result when it ends, and the hub deletes
what lands for a request that gave up. What survives both (the app crashed or
was killed mid-request, a delete was lost, a job ran for an input nobody waits
for) would stay in the service's folders for ever. So, while a hub runs, its
maintenance thread sweeps the service's input and output folders now and then:

* only objects named for a job (``<32 hex digits>`` then a suffix: ``.json``,
  ``.zip``, ``.started.json``...), directly in those folders: nothing else there,
  and no other folder or bucket, is touched (histories live elsewhere);
* never one of a job that a request of this process still waits for;
* only objects older than ``grace`` (default 1 h, beyond any request's deadline,
  900 s by default), so requests of other processes (another app replica, a CLI)
  that this one cannot see are spared too;
* never, within ``noted_grace`` (default 7 days), one of a job whose input says
  that a person's history waits for it (:data:`NOTED`, set by the page when it
  notes a run in flight: ``oscar_sd/ui/inflight.py``). An app that stopped
  mid-run leaves that run to its owner's next sign-in, which may be days away,
  and the sweep cannot read other people's histories to ask;
* bounded: at most ``max_listed`` objects listed and ``max_deleted`` deleted
  per folder and sweep, one sweep every ``interval``; the deletions go through
  the hub's background queue (batched, retried), and each sweep that found
  something says so in the log.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

logger = logging.getLogger("oscar_sd.hub")

#: A job's object: its uuid4 hex id, then what it is (input, result, marker, progress).
JOB_OBJECT = re.compile(r"(?P<job>[0-9a-f]{32})\.[A-Za-z0-9._-]+")
#: A job's input (``<job>.json`` or ``<job>.txt``): the object that carries :data:`NOTED`.
JOB_INPUT = re.compile(r"[0-9a-f]{32}\.(json|txt)")
#: The input's metadata field (``x-amz-meta-oscar-sd-noted: 1``) saying that a history
#: waits for this job's result.
NOTED = "oscar-sd-noted"


@dataclass(frozen=True)
class SweepPolicy:
    """When and how much the orphan sweep removes."""

    grace: float = 3600.0
    #: How long a job whose input is :data:`NOTED` is spared for its history.
    noted_grace: float = 7 * 24 * 3600.0
    interval: float = 600.0
    #: The first sweep, this long after the hub's maintenance thread starts.
    first_after: float = 30.0
    max_listed: int = 10_000
    max_deleted: int = 1_000


class AgedSource(Protocol):
    def list_aged(self, bucket: str, prefix: str, limit: int) -> list[tuple[str, float]]: ...
    def metadata(self, bucket: str, key: str) -> dict[str, str] | None: ...


class OrphanSweep:
    """The folders one hub sweeps, and when it last did (used by one thread)."""

    def __init__(self, policy: SweepPolicy | None = None) -> None:
        self.folders: set[tuple[str, str]] = set()
        #: Objects handed to the deletions, sweeps made, and the last sweep's cutoff
        #: (a Unix time: only objects modified before it were candidates).
        self.swept = 0
        self.sweeps = 0
        self.last_cutoff = 0.0
        self.configure(policy or SweepPolicy())

    def configure(self, policy: SweepPolicy) -> None:
        """Follow ``policy`` from now on (its first sweep ``first_after`` from now)."""
        self.policy = policy
        self._next = time.monotonic() + policy.first_after

    def watch(self, bucket: str, prefix: str) -> None:
        """Sweep ``bucket``/``prefix`` too (a service's input or output folder)."""
        self.folders.add((bucket, prefix))

    def due(self) -> bool:
        return bool(self.folders) and time.monotonic() >= self._next

    def sweep(self, source: AgedSource, live_jobs: Iterable[str]) -> dict[str, list[str]]:
        """The orphans to delete now, by bucket (at most ``max_deleted`` a folder)."""
        policy = self.policy
        self._next = time.monotonic() + policy.interval
        live = set(live_jobs)
        now = time.time()  # LastModified is the server's clock
        cutoff = now - policy.grace
        found: dict[tuple[str, str], list[tuple[str, str]]] = {}
        noted: set[str] = set()
        for bucket, prefix in sorted(self.folders):
            candidates = found.setdefault((bucket, prefix), [])
            for key, modified in source.list_aged(bucket, prefix, policy.max_listed):
                name = key[len(prefix):]
                match = JOB_OBJECT.fullmatch(name)
                if not match or match["job"] in live or modified >= cutoff:
                    continue
                if (JOB_INPUT.fullmatch(name) and modified >= now - policy.noted_grace
                        and _is_noted(source, bucket, key)):
                    noted.add(match["job"])
                candidates.append((key, match["job"]))
        doomed: dict[str, list[str]] = {}
        for (bucket, prefix), candidates in found.items():
            orphans = [key for key, job in candidates if job not in noted]
            orphans = orphans[:policy.max_deleted]
            if orphans:
                logger.info("%s/%s: removing %d objects of requests that no longer run "
                            "(older than %g s)", bucket, prefix, len(orphans), policy.grace)
                doomed.setdefault(bucket, []).extend(orphans)
                self.swept += len(orphans)
        if noted:
            logger.info("sparing %d runs that a history waits for", len(noted))
        self.sweeps += 1
        self.last_cutoff = cutoff
        return doomed


def _is_noted(source: AgedSource, bucket: str, key: str) -> bool:
    try:
        fields = source.metadata(bucket, key)
    except Exception:  # cannot tell: spare it until the next sweep
        return True
    return bool(fields) and fields.get(NOTED) == "1"


def job_of(key: str) -> str | None:
    """The job id an object key belongs to (its file name's), or None."""
    match = JOB_OBJECT.fullmatch(key.rsplit("/", 1)[-1])
    return match["job"] if match else None
