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


@dataclass(frozen=True)
class SweepPolicy:
    """When and how much the orphan sweep removes."""

    grace: float = 3600.0
    interval: float = 600.0
    #: The first sweep, this long after the hub's maintenance thread starts.
    first_after: float = 30.0
    max_listed: int = 10_000
    max_deleted: int = 1_000


class AgedSource(Protocol):
    def list_aged(self, bucket: str, prefix: str, limit: int) -> list[tuple[str, float]]: ...


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
        cutoff = time.time() - policy.grace  # LastModified is the server's clock
        doomed: dict[str, list[str]] = {}
        for bucket, prefix in sorted(self.folders):
            orphans = []
            for key, modified in source.list_aged(bucket, prefix, policy.max_listed):
                match = JOB_OBJECT.fullmatch(key[len(prefix):])
                if match and match["job"] not in live and modified < cutoff:
                    orphans.append(key)
                    if len(orphans) >= policy.max_deleted:
                        break
            if orphans:
                logger.info("%s/%s: removing %d objects of requests that no longer run "
                            "(older than %g s)", bucket, prefix, len(orphans), policy.grace)
                doomed.setdefault(bucket, []).extend(orphans)
                self.swept += len(orphans)
        self.sweeps += 1
        self.last_cutoff = cutoff
        return doomed


def job_of(key: str) -> str | None:
    """The job id an object key belongs to (its file name's), or None."""
    match = JOB_OBJECT.fullmatch(key.rsplit("/", 1)[-1])
    return match["job"] if match else None
