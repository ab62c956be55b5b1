"""Waiting for the hub, with storage outages said in words and bounded in time.

While the hub cannot use the cluster's storage (unreachable, or refusing the
keys), a waiting request reports "Cannot reach the cluster's storage,
retrying (N s)" (or, when it answers with an error, "The cluster's storage
refuses ...") every second and gives up with
:class:`ClusterUnreachableError` after ``outage_timeout`` seconds. Outside an
outage it simply waits for the hub's news.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import anyio

from .._errors import ClusterUnreachableError
from .._models import ProgressReporter, Stage
from .._storage import storage_error
from .._storage_faults import trouble_words
from .hub import NotificationHub
from .waiters import Waiter


@dataclass(frozen=True)
class Outage:
    """How one request treats storage trouble."""

    hub: NotificationHub
    endpoint: str
    timeout: float
    report: ProgressReporter

    def step(self, deadline: float) -> float | None:
        """How long to wait before looking again; None at the deadline."""
        now = time.monotonic()
        if now >= deadline:
            return None
        trouble = self.hub.trouble
        if trouble is None:
            return deadline - now
        since, error = trouble
        lasted = now - since
        if lasted >= self.timeout:
            reason = storage_error(error, self.endpoint)
            raise ClusterUnreachableError(
                f"{reason} Gave up after {lasted:.0f} s without the cluster's storage."
            )
        # Said at the stage reached: a job already running is not said to wait again.
        self.report(self.report.at_least(Stage.WAITING),
                    f"{trouble_words(error)}, retrying ({lasted:.0f} s)")
        return min(deadline - now, 1.0, self.timeout - lasted)


async def until_ready(
    hub: NotificationHub, waiter: Waiter, deadline: float, outage: Outage
) -> None:
    """Wait until the hub listens (or knows it need not): only then may the request upload."""
    while not waiter.connected.is_set():
        step = outage.step(deadline)
        if step is None:
            raise ClusterUnreachableError(
                f"Could not open the notification stream of the cluster's storage at "
                f"{outage.endpoint} before the deadline. Check that the cluster is up."
            )
        with anyio.move_on_after(min(step, 1.0)):  # an outage raises no event here
            await waiter.connected.wait()


async def until_landed(waiter: Waiter, deadline: float, outage: Outage) -> str | None:
    """The landed key, or None at the deadline."""
    while waiter.key is None:
        step = outage.step(deadline)
        if step is None:
            return None
        with anyio.move_on_after(step):
            await waiter.wait_for_news()
    return waiter.key
