"""Deletions that could not finish now, retried in the background.

Cancelling a request must return at once, even while storage is unreachable,
and a result that lands for a request nobody waits for any more must not stay
in the bucket. Both hand their deletions here; the hub's maintenance thread
retries them with backoff, a bounded number of times, and says so once.

A deletion that failed because storage could not be reached (MinIO restarting,
which OSCAR does on every service create and delete) is not refused: it is
tried again as soon as the hub sees storage answer, and gives up only after
``outage_limit`` seconds of such failures, however many.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from .._storage_faults import outage_kind

logger = logging.getLogger("oscar_sd.hub")

Remove = Callable[[str, list[str]], list[str]]
#: The reason of a deletion that failed because storage could not be reached.
UNREACHABLE = "storage unreachable"
#: The most keys one S3 multi-object delete may name.
BATCH = 1000


@dataclass
class _Deletion:
    bucket: str
    keys: list[str]
    attempts: int = 0
    due: float = 0.0
    #: Not before this is set (an upload still in flight), or until ``after_until``.
    after: threading.Event | None = None
    after_until: float = 0.0
    #: Since when its tries failed for want of storage (None: not so, or not yet).
    unreachable_since: float | None = None

    def ready(self, now: float) -> bool:
        if self.due > now:
            return False
        return self.after is None or self.after.is_set() or now >= self.after_until


class Deletions:
    """A bounded queue of pending deletions (thread-safe)."""

    def __init__(self, *, max_attempts: int = 8, max_pending: int = 10_000,
                 first_retry: float = 1.0, cap: float = 60.0,
                 outage_limit: float = 900.0) -> None:
        self.max_attempts = max_attempts
        self.outage_limit = outage_limit
        self.max_pending = max_pending
        self.first_retry = first_retry
        self.cap = cap
        self.deleted = 0
        self.given_up = 0
        self._pending: list[_Deletion] = []
        self._lock = threading.Lock()
        self._complained = False

    def __len__(self) -> int:
        with self._lock:
            return len(self._pending)

    def add(self, bucket: str, keys: list[str], *, now: bool = True,
            after: threading.Event | None = None, after_limit: float = 0.0) -> None:
        """Queue ``keys`` for deletion: at the next round (``now``) or after a first retry
        delay; with ``after``, only once that event is set (at most ``after_limit`` s on)."""
        if not keys:
            return
        moment = time.monotonic()
        due = moment if now or after is not None else moment + self.first_retry
        item = _Deletion(bucket, list(keys), due=due, after=after,
                         after_until=moment + after_limit)
        with self._lock:
            if len(self._pending) >= self.max_pending:
                self.given_up += len(keys)
                return
            self._pending.append(item)

    def storage_answers(self) -> None:
        """Storage answered again: what failed for want of it is due at the next round."""
        now = time.monotonic()
        with self._lock:
            for item in self._pending:
                if item.unreachable_since is not None:
                    item.due = min(item.due, now)

    def run_due(self, remove: Remove) -> None:
        """Try every deletion whose time came; called from the maintenance thread."""
        now = time.monotonic()
        with self._lock:
            due = [item for item in self._pending if item.ready(now)]
            self._pending = [item for item in self._pending if not item.ready(now)]
        outcome = self._remove_in_batches(due, remove)
        retry = []
        for item in due:
            failed = [key for key in item.keys if outcome[(item.bucket, key)]]
            reason = outcome[(item.bucket, failed[0])] if failed else ""
            self.deleted += len(item.keys) - len(failed)
            if not failed:
                continue
            item.keys, item.after = failed, None
            if reason == UNREACHABLE:
                now = time.monotonic()
                item.unreachable_since = item.unreachable_since or now
                gave_up = now - item.unreachable_since >= self.outage_limit
            else:
                item.attempts += 1
                gave_up = item.attempts >= self.max_attempts
            if gave_up:
                self.given_up += len(failed)
                logger.warning("gave up deleting %d objects from %s (%s)",
                               len(failed), item.bucket, reason)
                continue
            if not self._complained:  # once: an outage would otherwise flood the log
                self._complained = True
                logger.warning("could not delete %d objects from %s (%s); retrying in the "
                               "background", len(failed), item.bucket, reason)
            # Jittered, so that deletions queued together do not retry together; an
            # outage's are retried sooner still when storage answers (storage_answers).
            delay = min(self.cap, self.first_retry * 2**item.attempts)
            item.due = time.monotonic() + delay * random.uniform(0.5, 1.0)
            retry.append(item)
        with self._lock:
            self._pending.extend(retry)
            if not self._pending:
                self._complained = False

    @staticmethod
    def _remove_in_batches(due: list[_Deletion], remove: Remove) -> dict[tuple[str, str], str]:
        """Delete every due key with as few requests as S3 allows (1,000 keys each,
        per bucket): a burst of finished requests costs a handful of requests, not one
        each. Returns, per (bucket, key), "" when deleted, else why not."""
        by_bucket: dict[str, list[str]] = {}
        for item in due:
            by_bucket.setdefault(item.bucket, []).extend(item.keys)
        outcome: dict[tuple[str, str], str] = {}
        for bucket, keys in by_bucket.items():
            unique = list(dict.fromkeys(keys))
            for start in range(0, len(unique), BATCH):
                chunk = unique[start:start + BATCH]
                try:
                    failed, reason = set(remove(bucket, chunk)), "refused"
                except Exception as exc:
                    failed = set(chunk)
                    reason = UNREACHABLE if outage_kind(exc) else type(exc).__name__
                for key in chunk:
                    outcome[(bucket, key)] = reason if key in failed else ""
        return outcome
