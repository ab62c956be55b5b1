"""The notification hub: one MinIO listen stream per output folder, shared by every request.

A request registers the object keys its result may land under, waits until
the hub's stream is connected, uploads its input, and then awaits its waiter.
The hub's reader thread consumes MinIO's ``listen_bucket_notification``
stream, matches every ``s3:ObjectCreated:*`` record to a waiter by exact key
(after URL-unquoting) and resolves it on the waiter's own event loop.

Nothing may be missed, so:

* after every connect the hub lists what already landed for its pending keys
  (the catch-up), which covers results written while the stream was down;
* a dropped stream, or one silent for longer than ``stall_timeout`` (keep-alives
  and pings count as life), is reconnected with capped exponential backoff and
  full jitter, while waiters keep waiting;
* closing the hub interrupts the blocking read and joins the thread.

The stream is opened lazily by the first waiter and the thread ends once no
waiter has been pending for ``idle_timeout`` seconds.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol
from urllib.parse import unquote, unquote_plus

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread

logger = logging.getLogger("oscar_sd.hub")

#: Record names that mean "an object now exists" (Put, Post, Copy, CompleteMultipartUpload).
CREATED_EVENTS = "s3:ObjectCreated:"


class ListenResponse(Protocol):
    """The streaming HTTP response of a listen request (a urllib3 response)."""

    def read1(self, amt: int | None = None) -> bytes: ...
    def shutdown(self) -> None: ...
    def close(self) -> None: ...
    def release_conn(self) -> None: ...


class NotificationSource(Protocol):
    """What the hub needs from storage: open a listen stream and list a folder."""

    def open_listen(self, bucket: str, prefix: str) -> ListenResponse: ...
    def list_keys(self, bucket: str, prefix: str) -> Iterable[str]: ...


@dataclass(frozen=True)
class StreamAddress:
    """Identifies one shared stream: which MinIO, which bucket, which folder."""

    endpoint: str
    bucket: str
    prefix: str


@dataclass(frozen=True)
class Backoff:
    """Capped exponential backoff with full jitter, in seconds."""

    base: float = 0.05
    cap: float = 5.0

    def delay(self, attempt: int) -> float:
        return random.uniform(0, min(self.cap, self.base * 2**attempt))


class Waiter:
    """The awaitable of one request: resolved with the first of its keys that lands."""

    def __init__(self, keys: Iterable[str]) -> None:
        self.keys = frozenset(keys)
        self.key: str | None = None
        self.connected = anyio.Event()
        self._landed = anyio.Event()
        self._token = anyio.lowlevel.current_token()

    @property
    def resolved(self) -> bool:
        return self.key is not None

    async def wait(self) -> str:
        """Wait until one of the keys lands and return it."""
        await self._landed.wait()
        assert self.key is not None
        return self.key

    def resolve(self, key: str) -> None:
        """Mark ``key`` as landed. Runs on the waiter's event loop; the first key wins."""
        if self.key is None:
            self.key = key
            self._landed.set()


@dataclass
class HubStats:
    """Counters for tests and benchmarks."""

    connects: int = 0
    events: int = 0
    caught_up: int = 0
    resolved: int = 0
    #: The latest problems (bounded: an outage retries for as long as it lasts).
    errors: deque[str] = field(default_factory=lambda: deque(maxlen=100))


class NotificationHub:
    """One listen stream for one folder, shared by every pending request.

    Use :func:`get_hub` to get the process-wide hub of a folder rather than
    creating one: the point is that a thousand requests cost one connection.
    """

    def __init__(
        self,
        address: StreamAddress,
        source: NotificationSource,
        *,
        stall_timeout: float = 60.0,
        idle_timeout: float = 30.0,
        backoff: Backoff | None = None,
    ) -> None:
        self.address = address
        self.stall_timeout = stall_timeout
        self.idle_timeout = idle_timeout
        self.backoff = backoff or Backoff()
        self.stats = HubStats()
        self._source = source
        self._lock = threading.Lock()
        self._waiters: dict[str, Waiter] = {}  # every key of every pending waiter
        self._connected = False
        self._idle_since = time.monotonic()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._response: ListenResponse | None = None

    # -- the event-loop side ------------------------------------------------

    async def expect(self, keys: Iterable[str], source: NotificationSource | None = None) -> Waiter:
        """Register a waiter for ``keys`` and return once the stream is connected.

        Only after this returns may the request upload its input: from then on
        no result for these keys can be missed. ``source`` (the caller's own
        storage client) replaces the hub's when the stream is (re)started.
        """
        waiter = Waiter(keys)
        with self._lock:
            for key in waiter.keys:
                self._waiters[key] = waiter
            if self._connected:
                waiter.connected.set()
            if self._thread is None:  # no reader, or it retired: start one
                if source is not None:
                    self._source = source
                self._stop.clear()
                self._thread = threading.Thread(
                    target=self._run, name=f"oscar-sd-listen-{self.address.bucket}", daemon=True
                )
                self._thread.start()
        try:
            await waiter.connected.wait()
        except BaseException:
            self.discard(waiter)
            raise
        return waiter

    def discard(self, waiter: Waiter) -> None:
        """Forget a waiter (resolved, failed or cancelled)."""
        with self._lock:
            for key in waiter.keys:
                if self._waiters.get(key) is waiter:
                    del self._waiters[key]
            if not self._waiters:
                self._idle_since = time.monotonic()

    async def look_now(self, waiter: Waiter) -> str | None:
        """List the folder once for ``waiter``'s keys: the last look before a deadline."""
        keys = await anyio.to_thread.run_sync(self._existing_keys, waiter.keys)
        return min(keys) if keys else None

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def pending(self) -> int:
        with self._lock:
            return len({id(waiter) for waiter in self._waiters.values()})

    async def aclose(self) -> None:
        """Stop the stream and join the reader thread."""
        await anyio.to_thread.run_sync(self.close)

    def close(self) -> None:
        """Blocking form of :meth:`aclose`, for threads and atexit."""
        with self._lock:
            thread = self._thread
            self._stop.set()
        self._interrupt()
        if thread is not None:
            thread.join()

    # -- the reader thread --------------------------------------------------

    def _run(self) -> None:
        me = threading.current_thread()
        attempt = 0
        while self._keep_running(me):
            try:
                response = self._source.open_listen(self.address.bucket, self.address.prefix)
            except Exception as exc:
                # One warning per outage, not one per retry.
                self._note_error("could not open the notification stream", exc, loud=attempt == 0)
                self._stop.wait(self.backoff.delay(attempt))
                attempt += 1
                continue
            self.stats.connects += 1
            if attempt:
                logger.info("%s: notification stream open again", self._label)
            self._on_connected(response)
            if self._stop.is_set():  # closed while connecting
                self._interrupt()
            try:
                self._catch_up()
                for line in _lines(response):
                    attempt = 0  # the stream proved healthy
                    self._on_line(line)
                    if not self._keep_running(me):
                        break
            except Exception as exc:  # dropped, stalled (read timeout) or interrupted
                if not self._stop.is_set():
                    self._note_error("the notification stream dropped", exc)
            finally:
                self._on_disconnected(response)
            # Back off before reconnecting, so a server that keeps closing the
            # stream at once is not hammered; the first retry comes quickly.
            self._stop.wait(self.backoff.delay(attempt))
            attempt += 1

    def _keep_running(self, me: threading.Thread) -> bool:
        """False when closing, or idle for ``idle_timeout``: the reader then retires.

        Retiring happens under the lock together with the check, so a waiter
        registering at that moment either sees the hub connected to a reader
        that will serve it, or starts a new reader.
        """
        with self._lock:
            idle = not self._waiters and time.monotonic() - self._idle_since > self.idle_timeout
            if self._stop.is_set() or idle:
                if self._thread is me:
                    self._thread = None
                    self._connected = False
                return False
            return True

    def _on_connected(self, response: ListenResponse) -> None:
        with self._lock:
            self._response = response
            self._connected = True
            waiters = {id(w): w for w in self._waiters.values() if not w.connected.is_set()}
        self._on_loops([(waiter, waiter.connected.set) for waiter in waiters.values()])

    def _on_disconnected(self, response: ListenResponse) -> None:
        with self._lock:
            if self._response is response:  # a newer reader may already own the state
                self._response = None
                self._connected = False
        try:
            response.close()
            response.release_conn()
        except Exception:  # a dead socket may complain while closing; it is gone either way
            pass

    def _catch_up(self) -> None:
        """Resolve waiters whose result landed while no stream was listening."""
        with self._lock:
            pending = set(self._waiters)
        if not pending:
            return
        landed = self._existing_keys(pending)
        self.stats.caught_up += len(landed)
        self._resolve(landed)

    def _existing_keys(self, keys: Iterable[str]) -> set[str]:
        wanted = set(keys)
        listed = self._source.list_keys(self.address.bucket, self.address.prefix)
        return {key for key in listed if key in wanted}

    def _on_line(self, line: bytes) -> None:
        line = line.strip()
        if not line:  # a keep-alive: the stream is alive, nothing to do
            return
        try:
            records = json.loads(line).get("Records") or []  # {"Records": null} is a ping
        except (ValueError, AttributeError):
            self._note_error("ignored a malformed notification line", None)
            return
        landed = []
        for record in records:
            self.stats.events += 1
            if not str(record.get("eventName", "")).startswith(CREATED_EVENTS):
                continue
            key = record.get("s3", {}).get("object", {}).get("key")
            if isinstance(key, str):
                landed.append(key)
        if landed:
            self._resolve(landed)

    def _resolve(self, keys: Iterable[str]) -> None:
        matches: list[tuple[Waiter, str]] = []
        with self._lock:
            for key in keys:
                for candidate in _spellings(key):
                    waiter = self._waiters.get(candidate)
                    if waiter is not None:
                        matches.append((waiter, candidate))
                        break
        by_waiter = {id(waiter): (waiter, key) for waiter, key in reversed(matches)}
        self.stats.resolved += len(by_waiter)
        self._on_loops(
            [(waiter, partial(waiter.resolve, key)) for waiter, key in by_waiter.values()]
        )

    def _on_loops(self, calls: list[tuple[Waiter, Callable[[], object]]]) -> None:
        """Run each call on its waiter's own event loop, one hop per loop."""
        by_loop: dict[int, list[tuple[Waiter, Callable[[], object]]]] = {}
        for waiter, call in calls:
            by_loop.setdefault(id(waiter._token.native_token), []).append((waiter, call))
        for group in by_loop.values():
            try:
                anyio.from_thread.run_sync(_run_all, group, token=group[0][0]._token)
            except RuntimeError:  # that event loop has ended: its waiters are gone
                for waiter, _ in group:
                    self.discard(waiter)

    def _interrupt(self) -> None:
        """Unblock a reader stuck in ``read1`` by shutting the socket down."""
        with self._lock:
            response = self._response
        if response is not None:
            try:
                response.shutdown()
            except Exception:
                pass

    def _note_error(self, what: str, exc: BaseException | None, loud: bool = True) -> None:
        # Only the exception's type goes to the log: messages from HTTP
        # libraries can carry URLs and headers, and this must never leak keys.
        detail = f"{what} ({type(exc).__name__})" if exc else what
        self.stats.errors.append(detail)
        logger.log(logging.WARNING if loud else logging.DEBUG, "%s: %s", self._label, detail)

    @property
    def _label(self) -> str:
        return f"{self.address.bucket}/{self.address.prefix}"


def _run_all(calls: list[tuple[Waiter, Callable[[], object]]]) -> None:
    for _, call in calls:
        call()


def _lines(response: ListenResponse) -> Iterator[bytes]:
    """Split a chunked stream into lines as soon as each one is complete."""
    buffered = b""
    while True:
        chunk = response.read1(65536)
        if not chunk:
            return  # the server closed the stream
        buffered += chunk
        *complete, buffered = buffered.split(b"\n")
        if not buffered.strip():
            buffered = b""  # keep-alive spaces without a newline carry nothing
        yield from complete or [b""]  # no full line yet still shows the stream is alive


def _spellings(key: str) -> Iterator[str]:
    """The raw key first, then its unescaped forms: servers and webhooks differ."""
    yield key
    yield unquote_plus(key)
    yield unquote(key)


_hubs: dict[StreamAddress, NotificationHub] = {}
_hubs_lock = threading.Lock()


def get_hub(
    address: StreamAddress, source: NotificationSource, **options: float | Backoff
) -> NotificationHub:
    """The process-wide hub for ``address``, created on first use.

    ``options`` (``stall_timeout``, ``idle_timeout``, ``backoff``) apply when
    the hub is created; a running hub keeps its own.
    """
    with _hubs_lock:
        hub = _hubs.get(address)
        if hub is None:
            hub = _hubs[address] = NotificationHub(address, source, **options)  # type: ignore[arg-type]
        return hub


def close_all_hubs() -> None:
    """Stop every hub's stream (for tests and process shutdown)."""
    with _hubs_lock:
        hubs = list(_hubs.values())
        _hubs.clear()
    for hub in hubs:
        hub.close()
