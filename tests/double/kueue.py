"""Kueue as OSCAR sets it up: per-owner quotas that admit suspended jobs.

Read in grycap/oscar (v4.0.0 to v4.1.2):

- ``pkg/handlers/job.go``: a job of a service whose ``Owner`` is not
  ``cluster_admin`` (``types.DefaultOwner``) is created with ``Suspend: true``
  and the label ``kueue.x-k8s.io/queue-name`` of the service's LocalQueue, when
  ``KUEUE_ENABLE`` (true by default, ``pkg/types/config.go``); admins' services
  run at once. v3.6 has no Kueue.
- ``pkg/utils/kueue.go``: the LocalQueue points at the owner's ClusterQueue,
  whose nominal quota defaults to ``KUEUE_DEFAULT_CPU`` 2, ``_MEMORY`` 2Gi and
  (v4.1) ``_GPU`` 0; v4.0's ClusterQueue has no GPU resource at all, so a GPU job
  is never admitted there either. Kueue admits a job while the queue's usage
  plus its requests fit the quota (no borrowing: one cohort per user); a job
  asking more than the whole quota is never admitted.
- ``pkg/handlers/logs.go``: a job with no pod yet is listed as
  ``{"status": "Suspended"}``, with no times.
- ``pkg/handlers/quotas.go``: ``PUT /system/quotas/user/:userId`` (the admin
  only) changes the nominal quota (the double's quotas API, system.py, keeps
  it; :meth:`Kueue.admit` runs when it changes).

A job's requests are its service's ``cpu``, ``memory`` and one GPU with
``enable_gpu`` (``pkg/types/service.go`` ``ToPodSpec``).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

DEFAULT_OWNER = "cluster_admin"
_UNITS = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
          "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
_QUANTITY = re.compile(r"^\s*([0-9.]+)\s*(m|k|M|G|T|Ki|Mi|Gi|Ti)?\s*$")


def quantity(text: str | int | float) -> float:
    """A Kubernetes quantity ("4", "500m", "12Gi") as a number (cores, bytes)."""
    match = _QUANTITY.match(str(text))
    if match is None:
        raise ValueError(f"{text!r} is not a quantity")
    number, unit = float(match.group(1)), match.group(2) or ""
    return number / 1000 if unit == "m" else number * _UNITS[unit]


@dataclass(frozen=True)
class Resources:
    """CPU cores, memory bytes and GPUs: a quota, a job's requests or a queue's usage."""

    cpu: float = 0.0
    memory: float = 0.0
    gpu: int = 0

    def __add__(self, other: Resources) -> Resources:
        return Resources(self.cpu + other.cpu, self.memory + other.memory, self.gpu + other.gpu)

    def __sub__(self, other: Resources) -> Resources:
        return Resources(self.cpu - other.cpu, self.memory - other.memory, self.gpu - other.gpu)

    def fits(self, quota: Resources) -> bool:
        return (self.cpu <= quota.cpu + 1e-9 and self.memory <= quota.memory
                and self.gpu <= quota.gpu)

    @classmethod
    def of_service(cls, definition: dict[str, Any]) -> Resources:
        return cls(quantity(definition.get("cpu") or 0), quantity(definition.get("memory") or 0),
                   1 if definition.get("enable_gpu") else 0)

    @classmethod
    def of_quota(cls, quota: dict[str, int]) -> Resources:
        """The quotas API's values: CPU in millicores, memory in bytes, GPUs."""
        return cls(quota["cpu"] / 1000, quota["memory"], quota["gpu"])


DEFAULT_QUOTA = Resources(cpu=2.0, memory=2 * 2**30, gpu=0)


@dataclass
class Waiting:
    """A suspended job: whose queue, what it asks, and how to start it once admitted."""

    name: str
    owner: str
    requests: Resources
    start: Callable[[], None]


class Kueue:
    """The owners' ClusterQueues of one double. Thread-safe."""

    def __init__(self, active: Callable[[], bool] = lambda: True,
                 quota_of: Callable[[str], Resources] = lambda owner: DEFAULT_QUOTA) -> None:
        #: Whether jobs are queued at all (KUEUE_ENABLE, and OSCAR v4.0 or later).
        self.active = active
        #: An owner's ClusterQueue quota now (the double's quotas API state, system.py).
        self.quota_of = quota_of
        self._used: dict[str, Resources] = {}
        self._admitted: dict[str, tuple[str, Resources]] = {}  # job -> (owner, requests)
        self._waiting: list[Waiting] = []
        self._lock = threading.Lock()

    def suspends(self, definition: dict[str, Any]) -> bool:
        """job.go: jobs of services that the admin does not own start suspended."""
        return self.active() and str(definition.get("owner") or DEFAULT_OWNER) != DEFAULT_OWNER

    def used(self, owner: str) -> Resources:
        """What the owner's admitted jobs hold now (the quotas API's ``used``)."""
        with self._lock:
            return self._used.get(owner, Resources())

    # -- jobs -----------------------------------------------------------------------------

    def enqueue(self, job: str, owner: str, requests: Resources,
                start: Callable[[], None]) -> None:
        """A suspended job waits in its owner's queue; ``start`` runs once it is admitted."""
        with self._lock:
            self._waiting.append(Waiting(job, owner, requests, start))
        self.admit()

    def admit(self) -> None:
        """Admit every waiting job that fits, oldest first (BestEffortFIFO: a job that
        does not fit does not hold back those behind it). Call it when a quota changes."""
        starting: list[Waiting] = []
        with self._lock:
            for waiting in list(self._waiting):
                quota = self.quota_of(waiting.owner)
                used = self._used.get(waiting.owner, Resources())
                if (used + waiting.requests).fits(quota):
                    self._used[waiting.owner] = used + waiting.requests
                    self._admitted[waiting.name] = (waiting.owner, waiting.requests)
                    self._waiting.remove(waiting)
                    starting.append(waiting)
        for waiting in starting:
            waiting.start()

    def finished(self, job: str) -> None:
        """The job's pod ended: its requests leave the queue's usage."""
        with self._lock:
            admitted = self._admitted.pop(job, None)
            if admitted is not None:
                owner, requests = admitted
                self._used[owner] = self._used.get(owner, Resources()) - requests
            waiting = [w for w in self._waiting if w.name == job]
            for entry in waiting:  # deleted while suspended
                self._waiting.remove(entry)
        if admitted is not None:
            self.admit()
