"""The notification hub: one listen stream per output folder and storage account.

A request registers a waiter for the object keys its result may land under,
waits until the hub is *ready* (its stream's response headers arrived, so
MinIO has subscribed; or the server has no listen API and reconciliation
alone will do), uploads its input, and then awaits its waiter. Three paths
resolve a waiter, and the hub counts each:

* an event on the stream (``stream.py``), the normal path;
* the catch-up listing after every (re)connect, for results that landed while
  no stream was open;
* reconciliation (``reconcile.py``), for results whose event never came.

The same paths deliver a request's *progress* keys (the job's started
marker): those call the waiter's ``on_progress`` and leave it waiting.

Storage trouble (unreachable, or refusing the keys) raises an alarm on every
waiter, so a request can say so and give up after its ``outage_timeout``.
Keys of requests that gave up are remembered for a while, and a result that
lands for one is deleted (``cleanup.py``).

Hubs are keyed by (storage endpoint, access key, bucket, folder): a user
whose keys are refused never stalls another user's requests.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from functools import partial

import anyio
import anyio.to_thread

from .backoff import Backoff
from .cleanup import Deletions
from .loops import LoopGone
from .orphans import OrphanSweep, SweepPolicy
from .reconcile import ReconcilePolicy, Reconciler
from .source import ListenResponse, NotificationSource, StreamAddress
from .stats import HubStats
from .stream import read_stream
from .waiters import Waiter, WaiterRegistry

logger = logging.getLogger("oscar_sd.hub")

__all__ = [
    "Backoff", "HubStats", "NotificationHub", "StreamAddress", "Waiter",
    "close_all_hubs", "get_hub",
]


class NotificationHub:
    """One listen stream for one folder, shared by every pending request of one account.

    Use :func:`get_hub` rather than creating one: a thousand requests cost one
    connection and one reconciliation schedule.
    """

    def __init__(
        self,
        address: StreamAddress,
        source: NotificationSource,
        *,
        idle_timeout: float = 30.0,
        backoff: Backoff | None = None,
        policy: ReconcilePolicy | None = None,
        abandoned_for: float = 900.0,
        unsupported_retry: float = 300.0,
        sweep: SweepPolicy | None = None,
    ) -> None:
        self.address = address
        self.source = source
        self.idle_timeout = idle_timeout
        self.backoff = backoff or Backoff()
        self.abandoned_for = abandoned_for
        self.unsupported_retry = unsupported_retry
        self.stats = HubStats()
        self.registry = WaiterRegistry()
        self.deletions = Deletions()
        #: The folders whose orphans this hub removes (``orphans.py``); none until watched.
        self.orphans = OrphanSweep(sweep)
        self.reconciler = Reconciler(self, policy or ReconcilePolicy())
        self.stop_event = threading.Event()
        self._lock = threading.Lock()
        self._ready = False
        #: Since when the hub has wanted a stream and had none (None: one is open).
        self._streamless_since: float | None = time.monotonic()
        #: With no stream for this long while listings work (MinIO restarting faster
        #: than a stream can open), requests go ahead on listing alone.
        self.stream_fallback = 2.0
        self._failed_opens = 0  # since the last open stream: a slow first connect is no failure
        self._response: ListenResponse | None = None
        self._threads: dict[str, threading.Thread] = {}
        self._trouble: tuple[float, BaseException] | None = None

    # -- the event-loop side ------------------------------------------------

    def register(
        self,
        keys: Iterable[str],
        source: NotificationSource | None = None,
        *,
        progress_keys: Iterable[str] = (),
        on_progress: Callable[[str], object] | None = None,
        repeating_keys: Iterable[str] = (),
    ) -> Waiter:
        """Register a waiter for ``keys`` and make sure the hub runs.

        ``source`` (the caller's own storage client, same account) replaces the
        hub's when its threads (re)start. A landed ``progress_keys`` key calls
        ``on_progress(key)`` on the caller's event loop, before any result: once,
        or each time it lands for those of them in ``repeating_keys``.
        """
        waiter = Waiter(keys, progress_keys, on_progress, repeating_keys)
        self.registry.add(waiter)
        with self._lock:
            if self._ready:
                waiter.connected.set()
            if source is not None and not self._threads:
                self.source = source
            self._start_threads()
        return waiter

    async def expect(self, keys: Iterable[str], source: NotificationSource | None = None) -> Waiter:
        """:meth:`register`, then wait until the hub is ready: only then may the request upload."""
        waiter = self.register(keys, source)
        try:
            await waiter.connected.wait()
        except BaseException:
            self.discard(waiter)
            raise
        return waiter

    def discard(self, waiter: Waiter) -> None:
        """Forget a waiter whose result came (or that never uploaded)."""
        self.registry.discard(waiter)

    def abandon(self, waiter: Waiter) -> None:
        """Forget a waiter that gave up; a result landing for it later is deleted."""
        self.registry.abandon(waiter, self.abandoned_for)

    def delete_later(
        self, bucket: str, keys: list[str], *,
        after: threading.Event | None = None, after_limit: float = 0.0, soon: bool = False,
    ) -> None:
        """Delete in the background (bounded retries, batched with other deletions):
        ``soon`` at the next round, else after a first retry delay (a cancelled
        clean-up); with ``after``, not before that event is set (or ``after_limit``
        seconds passed)."""
        self.deletions.add(bucket, keys, now=soon, after=after, after_limit=after_limit)
        with self._lock:
            self._start_threads()

    async def look_now(
        self, waiter: Waiter, limiter: anyio.CapacityLimiter | None = None
    ) -> str | None:
        """List ``waiter``'s keys once (in one of ``limiter``'s threads): the last look
        before a deadline."""
        keys = await anyio.to_thread.run_sync(
            lambda: set(self.source.list_keys(self.address.bucket, waiter.prefix)),
            abandon_on_cancel=True, limiter=limiter,
        )
        found = sorted(keys & waiter.keys)
        return found[0] if found else None

    @property
    def connected(self) -> bool:
        return self._ready

    @property
    def pending(self) -> int:
        return self.registry.pending

    @property
    def trouble(self) -> tuple[float, BaseException] | None:
        """(since when, the last error) while storage cannot be used, else None."""
        return self._trouble

    @property
    def label(self) -> str:
        return f"{self.address.bucket}/{self.address.prefix}"

    async def aclose(self) -> None:
        """Stop the hub's threads and join them."""
        await anyio.to_thread.run_sync(self.close)

    def close(self) -> None:
        """Blocking form of :meth:`aclose`, for threads and atexit."""
        with self._lock:
            threads = list(self._threads.values())
            self.stop_event.set()
        self._interrupt()
        for thread in threads:
            thread.join()

    # -- thread lifecycle ---------------------------------------------------

    def _start_threads(self) -> None:
        """Start the reader and the maintenance thread if they are not running (under lock)."""
        if self.stop_event.is_set() and not self._threads:
            self.stop_event.clear()
        for name in ("listen", "reconcile"):
            if name not in self._threads:
                thread = threading.Thread(
                    target=self._thread_main, args=(name,),
                    name=f"oscar-sd-{name}-{self.address.bucket}", daemon=True,
                )
                self._threads[name] = thread
                if name == "listen" and self._response is None:
                    self._streamless_since = time.monotonic()
                thread.start()

    def _thread_main(self, name: str) -> None:
        me = threading.current_thread()
        if name == "listen":
            read_stream(self, me)
        else:
            self.reconciler.run(me)

    def keep_running(self, me: threading.Thread) -> bool:
        """False when closing, or idle for ``idle_timeout``: the thread then retires.

        Retiring happens under the lock together with the check, so a waiter
        registering at that moment either sees a thread that will serve it, or
        starts a new one.
        """
        with self._lock:
            idle = self.registry.is_idle(self.idle_timeout) and not self.deletions
            if self.stop_event.is_set() or idle:
                for name, thread in list(self._threads.items()):
                    if thread is me:
                        del self._threads[name]
                        if name == "listen":
                            self._ready = False
                return False
            return True

    # -- called by the threads ----------------------------------------------

    def on_connected(self, response: ListenResponse, reconnect: bool) -> None:
        if reconnect:
            logger.info("%s: notification stream open again", self.label)
        if self.stats.listen_unsupported:  # asked again later, and now it listens
            self.stats.listen_unsupported, self.stats.listen_refusal = False, ""
            logger.info("%s: notifications are allowed now; listing-only mode ends", self.label)
        with self._lock:
            self._response, self._streamless_since = response, None
            self._failed_opens = 0
            if self.stop_event.is_set():  # closed while connecting
                self._interrupt_locked()
        self.on_storage_ok()
        self._become_ready()

    def on_listen_unsupported(self, refusal: str = "") -> None:
        """No listen API, or the listen request refused (``refusal``, e.g. "403
        AccessDenied"): say so once, then run on listing (reconciliation) alone. The
        storage answered, so this is no outage."""
        if not self.stats.listen_unsupported:
            self.stats.listen_unsupported = True
            self.stats.listen_refusal = refusal
            logger.warning(
                "%s: the storage server does not offer MinIO's listen API or refuses it "
                "to these keys (%s); results are found by listing the folder instead "
                "(up to a few seconds later)", self.label, refusal or "no detail",
            )
        self.on_storage_ok()
        self._become_ready()

    def _become_ready(self) -> None:
        with self._lock:
            self._ready = True
        waiters = [w for w in self.registry.waiters() if not w.connected.is_set()]
        self._on_loops([(waiter, waiter.connected.set) for waiter in waiters])

    def on_disconnected(self, response: ListenResponse) -> None:
        with self._lock:
            if self._response is response:
                self._response = None
                self._ready = False
                self._streamless_since = time.monotonic()
        try:
            response.close()
            response.release_conn()
        except Exception:  # a dead socket may complain while closing; it is gone either way
            pass

    def catch_up(self) -> None:
        """Resolve waiters whose result landed while no stream was listening."""
        pending = self.registry.keys()
        if not pending:
            return
        listed = list(self.source.list_keys(self.address.bucket, self.address.prefix))
        self.on_landed(listed, via="catch-up")

    def on_landed(self, keys: Iterable[str], via: str) -> None:
        """Resolve the waiters of landed keys; delete results nobody waits for any more."""
        keys = list(keys)
        if via == "event":
            self.stats.events += len(keys)
        matches, abandoned = self.registry.match(keys)  # each waiter matched once
        progress = [(w, key) for w, key in matches if key in w.progress_keys]
        results = [(w, key) for w, key in matches if key not in w.progress_keys]
        counter = {"event": "resolved_by_event", "catch-up": "caught_up",
                   "reconciliation": "reconciled"}[via]
        setattr(self.stats, counter, getattr(self.stats, counter) + len(results))
        self.stats.resolved += len(results)
        self.stats.progress += len(progress)
        if via == "reconciliation":
            self.stats.progress_reconciled += len(progress)
        if abandoned:
            self.stats.late_results_deleted += len(abandoned)
            self.deletions.add(self.address.bucket, abandoned)
        # Progress first: a marker listed together with its result still comes before it.
        self._on_loops([(w, partial(w.progress, key, via)) for w, key in progress]
                       + [(w, partial(w.resolve, key, via)) for w, key in results])

    def on_open_failed(self) -> None:
        """A listen request failed (refused, reset before its headers came)."""
        self._failed_opens += 1

    def on_trouble(self, what: str, exc: BaseException, attempt: int) -> None:
        """Storage failed: remember since when, and alarm every waiter once per outage."""
        first = self._trouble is None
        self._trouble = (self._trouble[0] if self._trouble else time.monotonic(), exc)
        self.note_error(what, exc, loud=first)
        if first:
            self._on_loops([(w, w.raise_alarm) for w in self.registry.waiters()])

    @property
    def streaming(self) -> bool:
        """Whether a listen stream is open now."""
        return self._response is not None

    def on_listed(self) -> None:
        """A listing of the folder worked: storage answers. When no stream could be
        opened for ``stream_fallback`` seconds, waiting requests go ahead anyway: their
        results are found by listing until a stream is open again."""
        self.on_storage_ok()
        since = self._streamless_since
        if self._ready or since is None or time.monotonic() - since < self.stream_fallback:
            return
        if self._failed_opens < 1:  # still connecting (a busy machine): not a failing stream
            return
        logger.info("%s: no notification stream for %.0f s while the storage answers; "
                    "requests go ahead, their results found by listing until it is back",
                    self.label, time.monotonic() - since)
        self._become_ready()

    def on_storage_ok(self) -> None:
        self.deletions.storage_answers()  # what an outage stopped goes at the next round
        if self._trouble is not None:
            self._trouble = None
            logger.info("%s: the cluster's storage answers again", self.label)

    def note_error(self, what: str, exc: BaseException | None, loud: bool = True) -> None:
        # Only the exception's type goes to the log: messages from HTTP
        # libraries can carry URLs and headers, and this must never leak keys.
        detail = f"{what} ({type(exc).__name__})" if exc else what
        self.stats.errors.append(detail)
        logger.log(logging.WARNING if loud else logging.DEBUG, "%s: %s", self.label, detail)

    def _on_loops(self, calls: list[tuple[Waiter, Callable[[], object]]]) -> None:
        """Post each call to its waiter's own event loop, one batch per loop.

        Never waits for a loop: a busy or blocked loop only delays its own
        waiters, never the reader thread or another loop's results.
        """
        by_inbox: dict[int, list[tuple[Waiter, Callable[[], object]]]] = {}
        for waiter, call in calls:
            by_inbox.setdefault(id(waiter.inbox), []).append((waiter, call))
        for group in by_inbox.values():
            try:
                group[0][0].inbox.post([call for _, call in group])
            except LoopGone:  # that event loop has ended: its waiters are gone
                for waiter, _ in group:
                    self.discard(waiter)

    def _interrupt(self) -> None:
        with self._lock:
            self._interrupt_locked()

    def _interrupt_locked(self) -> None:
        """Unblock a reader stuck in ``read1`` by shutting the socket down."""
        if self._response is not None:
            try:
                self._response.shutdown()
            except Exception:
                pass


_hubs: dict[StreamAddress, NotificationHub] = {}
_hubs_lock = threading.Lock()


def get_hub(
    address: StreamAddress, source: NotificationSource, **options: object
) -> NotificationHub:
    """The process-wide hub for ``address``, created on first use.

    ``options`` (``idle_timeout``, ``backoff``, ``policy``, ...)
    apply when the hub is created; a running hub keeps its own.
    """
    with _hubs_lock:
        hub = _hubs.get(address)
        if hub is None:
            hub = _hubs[address] = NotificationHub(address, source, **options)  # type: ignore[arg-type]
        return hub


def close_all_hubs() -> None:
    """Stop every hub's threads (for tests and process shutdown)."""
    with _hubs_lock:
        hubs = list(_hubs.values())
        _hubs.clear()
    for hub in hubs:
        hub.close()
