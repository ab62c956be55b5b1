"""The spill-over's line: the requests of this process waiting for the warm replicas.

What :class:`~oscar_sd._spill.SpillOver` decides by: the requests on the warm
service not started yet (in upload order), the measured gaps between warm
results, and the spilled per-job jobs not started yet. Every client of one pair
in a process shares one line: the page opens a client per sign-in, and fifty
people each alone in a line of their own would never spill.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio

if TYPE_CHECKING:
    from ._oscar import OscarSD

#: Gaps between warm results kept for the mean.
GAP_WINDOW = 64


@dataclass
class Waiting:
    """One request on the warm service, not yet started."""

    job: str
    uploaded: bool = False
    started: bool = False


@dataclass(eq=False)
class SpillQueue:
    """What the spill decides by, shared by every client of one pair in this process."""

    #: Requests on the warm service not yet started, in upload order.
    waiting: OrderedDict[str, Waiting] = field(default_factory=OrderedDict)
    #: Gaps between warm results while requests waited (seconds per request).
    gaps: deque[float] = field(default_factory=lambda: deque(maxlen=GAP_WINDOW))
    last_result: float | None = None
    #: Seconds from upload to start of spilled per-job jobs, and the jobs uploaded but
    #: not started (job -> when uploaded), running, and the most seen running at once.
    job_starts: deque[float] = field(default_factory=lambda: deque(maxlen=GAP_WINDOW))
    unstarted_jobs: dict[str, float] = field(default_factory=dict)
    running_jobs: set[str] = field(default_factory=set)
    most_running: int = 0
    changed: anyio.Event = field(default_factory=anyio.Event)


#: One line per (storage endpoint, warm service, per-job service), alive while a
#: client of that pair is.
_queues: weakref.WeakValueDictionary[tuple[str, str, str], SpillQueue] = (
    weakref.WeakValueDictionary())


def shared_queue(warm: OscarSD, per_job: OscarSD) -> SpillQueue:
    key = (warm._storage.endpoint, warm.service, per_job.service)
    queue = _queues.get(key)
    if queue is None:
        queue = _queues[key] = SpillQueue()
    return queue
