"""Time and GPUs in the double: pod starts, model loads and generations take their time,
on a bounded pool of GPUs that job pods and exposed-service replicas share.

On a GPU cluster a request pays a pod start (scheduling, image pull, container
start), a model load (imports, weights to the GPU) and its generation. The
double plays these on a scaled clock: ``model seconds x time_scale`` real
seconds (20 s of pod start is 0.2 s at scale 0.01), and reports in model
seconds. Every wait is on an :class:`threading.Event` with that timeout, so a
stop ends it at once.

Kubernetes schedules a pod that asks for ``nvidia.com/gpu: 1`` onto a node
with a free GPU, or leaves it Pending (what OSCAR's ``enable_gpu: true`` asks
for, grycap/oscar ``pkg/types/service.go`` ``ToPodSpec``). Job pods and the
replicas of an exposed service's Deployment draw from the same nodes: here one
:class:`GpuPool`. A pod holds its GPU from scheduling to its end; the pool
counts GPU-seconds held, and the generations count GPU-seconds used.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Timing:
    """Durations in model seconds, and how fast the model clock runs."""

    #: Scheduling to container start: image pull, sandbox (a Pending pod).
    pod_start: float = 20.0
    #: Imports and the weights to the GPU, in a started container.
    model_load: float = 10.0
    #: One request's generation; a call of n requests takes n times this
    #: (a GPU that one request already fills gains nothing from batching).
    generation: float = 1.0
    #: Real seconds per model second.
    time_scale: float = 0.01

    def wait(self, model_seconds: float, stop: threading.Event | None = None) -> bool:
        """Let ``model_seconds`` pass; False when ``stop`` was set first."""
        return not (stop or threading.Event()).wait(max(0.0, model_seconds) * self.time_scale)

    def now(self) -> float:
        """The model clock, in model seconds."""
        return time.monotonic() / self.time_scale


@dataclass
class Lease:
    """One GPU held by one pod, from ``since`` (model seconds) to ``until``."""

    holder: str
    since: float
    until: float | None = None


@dataclass
class GpuPool:
    """``size`` GPUs; a pod waits for one to be free, in the order it asked."""

    size: int
    timing: Timing
    #: Every lease, ended or not, for the GPU-seconds held.
    leases: list[Lease] = field(default_factory=list)
    #: Model seconds of generation, for the GPU-seconds used.
    used_seconds: float = 0.0
    _cond: threading.Condition = field(default_factory=threading.Condition, repr=False)
    _tickets: Iterator[int] = field(default_factory=itertools.count, repr=False)
    _line: list[int] = field(default_factory=list, repr=False)

    @property
    def in_use(self) -> int:
        with self._cond:
            return sum(1 for lease in self.leases if lease.until is None)

    def acquire(self, holder: str, stop: threading.Event | None = None) -> Lease | None:
        """Wait for a free GPU (first come, first served); None when ``stop`` is set first."""
        with self._cond:
            ticket = next(self._tickets)
            self._line.append(ticket)
            try:
                while True:
                    if stop is not None and stop.is_set():
                        return None
                    busy = sum(1 for lease in self.leases if lease.until is None)
                    if busy < self.size and self._line[0] == ticket:
                        lease = Lease(holder, self.timing.now())
                        self.leases.append(lease)
                        return lease
                    self._cond.wait()  # release() and wake() notify
            finally:
                self._line.remove(ticket)
                self._cond.notify_all()

    def release(self, lease: Lease) -> None:
        with self._cond:
            if lease.until is None:
                lease.until = self.timing.now()
            self._cond.notify_all()

    def wake(self) -> None:
        """Waiters look at their stop events again (a Deployment scaled down)."""
        with self._cond:
            self._cond.notify_all()

    @contextmanager
    def held(self, holder: str) -> Iterator[Lease]:
        lease = self.acquire(holder)
        assert lease is not None
        try:
            yield lease
        finally:
            self.release(lease)

    def generated(self, model_seconds: float) -> None:
        with self._cond:
            self.used_seconds += model_seconds

    def held_seconds(self, since: float | None = None) -> float:
        """GPU-seconds held (model seconds), counting only the time after ``since``."""
        now = self.timing.now()
        with self._cond:
            total = 0.0
            for lease in self.leases:
                start = lease.since if since is None else max(lease.since, since)
                end = lease.until if lease.until is not None else now
                total += max(0.0, end - start)
            return total


@dataclass
class Capacity:
    """What a ClusterDouble built with ``capacity=`` knows about time and GPUs."""

    timing: Timing = field(default_factory=Timing)
    gpus: int = 4

    def __post_init__(self) -> None:
        self.pool = GpuPool(self.gpus, self.timing)
