"""Reconciliation: find results whose event never came.

MinIO drops events for a reader that falls behind and never replays them; a
storage server without the listen API sends none at all. So while requests
wait, the hub's maintenance thread checks the overdue ones by listing:

* each request is checked first ``first_check`` seconds after it registered,
  then at doubling intervals capped at ``max_interval`` (which bounds how long
  a silently landed result can go unnoticed);
* a round with a few requests due lists each one's own keys (one request
  each); with more due, one listing of the whole folder serves every waiter;
* at most ``max_requests_per_minute`` storage requests a minute; past that,
  only whole-folder listings;
* rounds are about ``round_interval`` apart, jittered, and a round whose
  listing failed is tried again after a short backoff (also jittered). A fixed
  period would lock onto a periodic outage: with MinIO restarting every 0.5 s,
  rounds exactly 1 s apart kept landing in the 0.1 s it refused connections,
  for over a minute (bench/restarts.py).

Its cost is counted in the hub's stats and logged every minute. The
reconciler runs in a thread of the hub (``hub.py``) and reports to it through
:class:`ReconcileOwner`, so this file does not depend on the hub.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from .backoff import Backoff
from .cleanup import Deletions
from .orphans import OrphanSweep, job_of
from .source import NotificationSource, StreamAddress
from .stats import HubStats
from .waiters import Waiter, WaiterRegistry

logger = logging.getLogger("oscar_sd.hub")

#: How many keys one page of an S3 listing returns.
PAGE_SIZE = 1000


@dataclass(frozen=True)
class ReconcilePolicy:
    """When the hub checks storage for results whose event did not come."""

    first_check: float = 1.0
    max_interval: float = 6.0
    round_interval: float = 1.0
    per_request_limit: int = 4
    #: The longest interval in listing-only mode (no listen stream at all): every
    #: result is found by listing, so within this (plus a round) of landing.
    listing_only_interval: float = 2.0
    max_requests_per_minute: int = 120
    #: How soon a round whose listing failed is tried again (by failures in a row).
    retry: Backoff = field(default_factory=lambda: Backoff(base=0.1, cap=1.0))


class ReconcileOwner(Protocol):
    """What the reconciler needs from its hub."""

    address: StreamAddress
    source: NotificationSource
    stats: HubStats
    registry: WaiterRegistry
    deletions: Deletions
    orphans: OrphanSweep
    stop_event: threading.Event

    @property
    def label(self) -> str: ...
    def keep_running(self, me: threading.Thread) -> bool: ...
    def on_landed(self, keys: Iterable[str], via: str) -> None: ...
    def on_trouble(self, what: str, exc: BaseException, attempt: int) -> None: ...
    def on_storage_ok(self) -> None: ...
    def on_listed(self) -> None: ...
    @property
    def streaming(self) -> bool: ...
    def note_error(self, what: str, exc: BaseException | None, loud: bool = True) -> None: ...


class Reconciler:
    """The maintenance thread of one hub: reconciliation rounds and pending deletions."""

    def __init__(self, hub: ReconcileOwner, policy: ReconcilePolicy) -> None:
        self.hub = hub
        self.policy = policy
        self._schedule: dict[Waiter, tuple[float, float]] = {}  # waiter -> (due, interval)
        self._recent: deque[float] = deque()  # when each storage request went out
        self._last_folder_listing = 0.0
        self._last_log = time.monotonic()
        self._failed_rounds = 0  # in a row: they space the quick retries

    @property
    def requests_last_minute(self) -> int:
        self._forget_old(time.monotonic())
        return len(self._recent)

    def run(self, me: threading.Thread) -> None:
        hub = self.hub
        while hub.keep_running(me):
            try:
                self.round()
                hub.deletions.run_due(hub.source.remove)
                if hub.orphans.due():
                    self.sweep()
            except Exception as exc:  # never let one bad round end the thread
                hub.note_error("a reconciliation round failed", exc)
            self._log_cost()
            hub.stop_event.wait(self._pause())

    def _pause(self) -> float:
        """Until the next round: jittered, and sooner after a failed listing."""
        if self._failed_rounds:
            return 0.01 + self.policy.retry.delay(self._failed_rounds - 1)
        return self.policy.round_interval * random.uniform(0.75, 1.25)

    def round(self) -> None:
        """Check the requests that are due; at most one folder listing."""
        hub, policy, now = self.hub, self.policy, time.monotonic()
        longest = policy.max_interval
        if hub.stats.listen_unsupported or not hub.streaming:
            longest = min(longest, policy.listing_only_interval)
        waiters = hub.registry.waiters()
        for gone in set(self._schedule) - set(waiters):
            del self._schedule[gone]
        due = []
        for waiter in waiters:
            at, _ = self._schedule.setdefault(
                waiter, (waiter.registered + policy.first_check, policy.first_check)
            )
            if at <= now:
                due.append(waiter)
        abandoned_due = (
            hub.registry.abandoned > 0
            and now - self._last_folder_listing >= longest
        )
        if not due and not abandoned_due:
            return
        budget = policy.max_requests_per_minute - self.requests_last_minute
        whole_folder = abandoned_due or len(due) > min(policy.per_request_limit, budget)
        if whole_folder and budget < 1:
            return  # over the budget: the next round tries again
        try:
            if whole_folder:
                keys = self._list(hub.address.prefix)
                self._last_folder_listing = now
                checked = waiters
            else:
                keys = [key for waiter in due for key in self._list(waiter.prefix)]
                checked = due
        except Exception as exc:
            self._failed_rounds += 1
            hub.on_trouble("could not list the results folder", exc, 1)
            return
        self._failed_rounds = 0
        hub.on_listed()
        for waiter in checked:
            _, interval = self._schedule[waiter]
            interval = min(longest, interval * 2)
            self._schedule[waiter] = (now + interval, interval)
        if keys:
            hub.on_landed(keys, via="reconciliation")

    def sweep(self) -> None:
        """Hand the orphans of the watched folders to the background deletions, sparing
        every job a request of this hub still waits for."""
        hub = self.hub
        live = {job for job in map(job_of, hub.registry.keys()) if job is not None}
        for bucket, keys in hub.orphans.sweep(hub.source, live).items():
            hub.deletions.add(bucket, keys)

    def _list(self, prefix: str) -> list[str]:
        keys = list(self.hub.source.list_keys(self.hub.address.bucket, prefix))
        pages = 1 + len(keys) // PAGE_SIZE
        sent = time.monotonic()
        self._recent.extend([sent] * pages)
        self.hub.stats.reconcile_requests += pages
        return keys

    def _forget_old(self, now: float) -> None:
        while self._recent and self._recent[0] < now - 60:
            self._recent.popleft()

    def _log_cost(self) -> None:
        now = time.monotonic()
        if now - self._last_log < 60:
            return
        self._last_log = now
        stats = self.hub.stats
        logger.info(
            "%s: reconciliation made %d storage requests in the last minute "
            "(%d results found by it so far, %d by events)",
            self.hub.label, self.requests_last_minute, stats.reconciled, stats.resolved_by_event,
        )
