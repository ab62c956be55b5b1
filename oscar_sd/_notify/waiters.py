"""The waiter registry: which request waits for which object keys.

A request registers a :class:`Waiter` for the keys its result may land under
(its *terminal* keys) and, optionally, keys that only tell how it is getting on
(its *progress* keys: the job's ``<job>.started.json``). The hub's threads match
landed keys against the registry and, on the waiter's own event loop, resolve
the waiter (the first terminal key wins) or call its ``on_progress`` (once per
progress key, or each time for a *repeating* one; never after the waiter
resolved). A request that gives up (cancelled, timed out) leaves its keys
behind as *abandoned* for a while, so that a result landing late is deleted
instead of staying in the bucket forever.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from urllib.parse import unquote, unquote_plus

import anyio

from .loops import Inbox, current_inbox


class Waiter:
    """The awaitable of one request: resolved with the first of its keys that lands,
    or failed by whoever learns that no result will come (the job watch)."""

    def __init__(
        self,
        keys: Iterable[str],
        progress_keys: Iterable[str] = (),
        on_progress: Callable[[str], object] | None = None,
        repeating_keys: Iterable[str] = (),
    ) -> None:
        self.keys = frozenset(keys)
        self.progress_keys = frozenset(progress_keys) - self.keys
        #: Progress keys told every time they land, not once (a warm replica's
        #: ``<job>.progress.json``, rewritten as the steps go on).
        self.repeating_keys = frozenset(repeating_keys) & self.progress_keys
        #: Every key the registry knows this waiter by.
        self.all_keys = self.keys | self.progress_keys
        self.on_progress = on_progress
        #: What one listing of this request's objects asks for: the keys' common prefix.
        self.prefix = _common_prefix(self.all_keys)
        self.key: str | None = None
        #: Set by the registry (under its lock) when a landed key is matched: the
        #: resolution is on its way to the waiter's loop, and is counted once.
        self.claimed = False
        #: The progress keys already matched (under the registry's lock): each is told once.
        self.progress_claimed: set[str] = set()
        #: The progress keys that reached the waiter's loop, in order.
        self.progress_seen: list[str] = []
        self.resolved_by: str | None = None
        #: Why no result will come, and who found out; set by :meth:`fail`.
        self.failure: Exception | None = None
        self.failed_by: str | None = None
        self.registered = time.monotonic()
        self.connected = anyio.Event()
        self._landed = anyio.Event()
        self._alarm = anyio.Event()
        #: Where the hub's threads post this waiter's updates (its own event loop).
        self.inbox: Inbox = current_inbox()

    @property
    def resolved(self) -> bool:
        return self.key is not None

    async def wait(self) -> str:
        """Wait until one of the keys lands and return it (or raise the failure)."""
        await self._landed.wait()
        if self.key is None and self.failure is not None:
            raise self.failure
        assert self.key is not None
        return self.key

    async def wait_for_news(self) -> str | None:
        """The landed key, or None when the hub raised an alarm (storage in trouble).

        Raises the waiter's :attr:`failure` once it has one.
        """
        if self.key is None and self.failure is None:
            async with anyio.create_task_group() as tasks:

                async def on(event: anyio.Event) -> None:
                    await event.wait()
                    tasks.cancel_scope.cancel()

                tasks.start_soon(on, self._landed)
                tasks.start_soon(on, self._alarm)
            if self._alarm.is_set():
                self._alarm = anyio.Event()
        if self.key is None and self.failure is not None:
            raise self.failure
        return self.key

    # -- called on the waiter's event loop by the hub -------------------------

    def resolve(self, key: str, via: str = "event") -> None:
        """Mark ``key`` as landed; the first key wins (a failure already told is final)."""
        if self.key is None and self.failure is None:
            self.key, self.resolved_by = key, via
            self._landed.set()

    def progress(self, key: str, via: str = "event") -> None:
        """A progress key landed: tell ``on_progress`` (not once the waiter has its end)."""
        if self.key is not None or self.failure is not None:
            return
        if key in self.progress_seen and key not in self.repeating_keys:
            return
        if key not in self.progress_seen:
            self.progress_seen.append(key)
        if self.on_progress is not None:
            self.on_progress(key)

    def fail(self, error: Exception, by: str) -> None:
        """No result will come: :meth:`wait_for_news` raises ``error`` (unless one landed)."""
        if self.key is None and self.failure is None:
            self.failure, self.failed_by = error, by
            self._landed.set()

    def raise_alarm(self) -> None:
        self._alarm.set()


class WaiterRegistry:
    """Thread-safe: every key of every pending waiter, and the abandoned keys."""

    def __init__(self, *, abandoned_limit: int = 10_000) -> None:
        self.lock = threading.Lock()
        self._by_key: dict[str, Waiter] = {}
        self._abandoned: OrderedDict[str, float] = OrderedDict()  # key -> when to forget it
        self._abandoned_limit = abandoned_limit
        self.idle_since = time.monotonic()

    def add(self, waiter: Waiter) -> None:
        with self.lock:
            for key in waiter.all_keys:
                self._by_key[key] = waiter

    def discard(self, waiter: Waiter) -> None:
        with self.lock:
            for key in waiter.all_keys:
                if self._by_key.get(key) is waiter:
                    del self._by_key[key]
            if not self._by_key:
                self.idle_since = time.monotonic()

    def abandon(self, waiter: Waiter, keep_for: float) -> None:
        """Forget ``waiter``, but remember its keys (progress keys too: a late started
        marker is deleted as well) for ``keep_for`` seconds (bounded)."""
        self.discard(waiter)
        until = time.monotonic() + keep_for
        with self.lock:
            for key in waiter.all_keys:
                self._abandoned[key] = until
                self._abandoned.move_to_end(key)
            while len(self._abandoned) > self._abandoned_limit:
                self._abandoned.popitem(last=False)  # the oldest go first

    def waiters(self) -> list[Waiter]:
        with self.lock:
            return list({id(w): w for w in self._by_key.values()}.values())

    def keys(self) -> set[str]:
        with self.lock:
            return set(self._by_key)

    @property
    def pending(self) -> int:
        return len(self.waiters())

    @property
    def abandoned(self) -> int:
        self._expire()
        with self.lock:
            return len(self._abandoned)

    def match(self, keys: Iterable[str]) -> tuple[list[tuple[Waiter, str]], list[str]]:
        """The waiters these landed keys resolve (each waiter once, ever) or tell of
        progress (each progress key once), and the abandoned keys among them (taken
        out: each is deleted once). A pair whose key is among ``waiter.progress_keys``
        is progress; any other pair resolves its waiter."""
        matches: list[tuple[Waiter, str]] = []
        abandoned: list[str] = []
        self._expire()
        now = time.monotonic()
        with self.lock:
            for key in keys:
                for candidate in spellings(key):
                    waiter = self._by_key.get(candidate)
                    if waiter is not None:
                        if candidate in waiter.progress_keys:
                            if (candidate not in waiter.progress_claimed
                                    or candidate in waiter.repeating_keys):
                                waiter.progress_claimed.add(candidate)
                                matches.append((waiter, candidate))
                        elif not waiter.claimed:
                            waiter.claimed = True
                            matches.append((waiter, candidate))
                        break
                    until = self._abandoned.pop(candidate, None)
                    if until is not None:
                        if until > now:
                            abandoned.append(candidate)
                        break
        return matches, abandoned

    def _expire(self) -> None:
        now = time.monotonic()
        with self.lock:
            while self._abandoned:
                key, until = next(iter(self._abandoned.items()))
                if until > now:
                    break
                del self._abandoned[key]

    def is_idle(self, for_at_least: float) -> bool:
        with self.lock:
            empty = not self._by_key and not self._abandoned
            return empty and time.monotonic() - self.idle_since > for_at_least


def spellings(key: str) -> Iterator[str]:
    """The raw key first, then its unescaped forms: servers and webhooks differ."""
    yield key
    yield unquote_plus(key)
    yield unquote(key)


def _common_prefix(keys: frozenset[str]) -> str:
    """The longest string every key starts with (character by character, not by path)."""
    if not keys:
        return ""
    first, last = min(keys), max(keys)
    size = 0
    while size < min(len(first), len(last)) and first[size] == last[size]:
        size += 1
    return first[:size]
