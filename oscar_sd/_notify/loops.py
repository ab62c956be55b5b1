"""Handing work from the hub's threads to the event loops that wait on it, without waiting.

The hub's reader thread must never wait for an event loop: a loop that is
busy (or blocked by its application) would hold up every other loop's
results, and MinIO drops events for a reader that falls behind. So each loop
gets an :class:`Inbox`: threads append calls to it and wake the loop at most
once per batch (``call_soon_threadsafe`` on asyncio, ``run_sync_soon`` on
trio); the loop runs everything queued in one go when it gets to it.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable

import anyio.lowlevel

Call = Callable[[], object]


class LoopGone(RuntimeError):
    """The event loop of an inbox has ended: nobody will run its calls."""


class Inbox:
    """The calls waiting to run on one event loop (thread-safe)."""

    def __init__(self, wake: Callable[[Call], object]) -> None:
        self._wake = wake  # schedules a callable on the loop; never blocks
        self._lock = threading.Lock()
        self._calls: list[Call] = []
        self._scheduled = False

    def post(self, calls: list[Call]) -> None:
        """Queue ``calls`` to run on the loop, in order. Raises :class:`LoopGone`."""
        with self._lock:
            self._calls.extend(calls)
            if self._scheduled:
                return  # the loop will pick these up with the batch already announced
            self._scheduled = True
        try:
            self._wake(self._drain)
        except RuntimeError as exc:  # asyncio: loop closed; trio: RunFinishedError
            with self._lock:
                self._calls.clear()
                self._scheduled = False
            raise LoopGone(str(exc)) from None

    def _drain(self) -> None:
        """On the loop: run every queued call (a failing call does not stop the others)."""
        with self._lock:
            calls, self._calls = self._calls, []
            self._scheduled = False
        for call in calls:
            try:
                call()
            except Exception:  # pragma: no cover - the calls are the waiters' own setters
                pass


_inboxes: weakref.WeakKeyDictionary[object, Inbox] = weakref.WeakKeyDictionary()
_inboxes_lock = threading.Lock()


def current_inbox() -> Inbox:
    """The inbox of the running event loop (one per loop, made on first use)."""
    native = anyio.lowlevel.current_token().native_token  # an asyncio loop or a TrioToken
    with _inboxes_lock:
        inbox = _inboxes.get(native)
        if inbox is None:
            # asyncio: loop.call_soon_threadsafe; trio: TrioToken.run_sync_soon
            wake = getattr(native, "call_soon_threadsafe", None) or native.run_sync_soon
            inbox = Inbox(wake)
            try:
                _inboxes[native] = inbox
            except TypeError:  # a token that cannot be weakly referenced: one inbox per waiter
                pass
        return inbox
