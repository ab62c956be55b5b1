"""MinIO's listen extension: open streams and the fan-out of events to them.

Follows minio/minio ``cmd/listen-notification-handlers.go`` (and
``setEventStreamHeaders`` in ``cmd/api-headers.go``):

* the handler subscribes first and then writes nothing, not even the response
  headers (Go sends them with the first write), until the first event or tick;
* without ``ping`` a single space ``" "`` is written every 500 ms; with
  ``ping=N`` (whole seconds, at least 1) ``{"Records":null}`` every N seconds;
* every event is its own line, ``{"Records":[<one event>]}``;
* publishing never blocks: each stream has a bounded queue, and an event that
  does not fit is dropped, silently, with the stream still healthy.

Each stream's queue is drained by the server thread serving its request, so a
publisher costs one hand-off per stream, never a wait.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from .events import ObjectEvent, build_record, encode_line, event_matches

PING_LINE = b'{"Records":null}\n'
KEEPALIVE = b" "
#: MinIO buffers ``getRequestsPoolCapacity()`` events per stream; a few thousand.
DEFAULT_QUEUE_SIZE = 4000


@dataclass(eq=False)
class ListenStream:
    """One open listen response."""

    bucket: str
    prefix: str
    suffix: str
    events: Sequence[str]
    keepalive_interval: float
    ping: int | None = None
    queue_size: int = DEFAULT_QUEUE_SIZE
    sock: socket.socket | None = None
    stalled: bool = False
    #: The reader fell behind: nothing is written until it catches up.
    behind: bool = False
    dropped: int = 0
    _lines: deque[bytes] = field(default_factory=deque)
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _closed: bool = False
    _aborted: bool = False

    def wants(self, event: ObjectEvent) -> bool:
        return (
            event.bucket == self.bucket
            and event.key.startswith(self.prefix)
            and event.key.endswith(self.suffix)
            and event_matches(self.events, event.name)
        )

    def send(self, line: bytes) -> None:
        """MinIO's non-blocking send: a line that does not fit is dropped."""
        with self._cond:
            if self.stalled or self._closed:
                return
            if len(self._lines) >= self.queue_size:
                self.dropped += 1
                return
            self._lines.append(line)
            self._cond.notify()

    def stall(self) -> None:
        with self._cond:
            self.stalled = True
            self._cond.notify()

    def fall_behind(self, queue_size: int) -> None:
        with self._cond:
            self.behind, self.queue_size = True, queue_size
            self._cond.notify()

    def catch_up(self) -> None:
        with self._cond:
            self.behind = False
            self._cond.notify()

    def close(self, abort: bool = False) -> None:
        """End the response; ``abort`` resets the TCP connection instead (a crash)."""
        with self._cond:
            self._closed, self._aborted = True, abort
            self._cond.notify()
        if abort and self.sock is not None:
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def body(self) -> Iterator[bytes]:
        """The chunked response body, run by the server thread serving this request.

        Nothing is yielded before the first event or tick: werkzeug, like Go,
        sends the status line and headers with the first chunk.
        """
        if self.ping:
            tick_line, interval = PING_LINE, float(self.ping)
        else:
            tick_line, interval = KEEPALIVE, self.keepalive_interval
        next_tick = time.monotonic() + interval  # a ticker: ticks do not wait for events
        while True:
            with self._cond:
                while True:
                    if self._closed:
                        if self._aborted:  # no last chunk: the connection just ends
                            raise ConnectionResetError("the listen stream was aborted")
                        return
                    now = time.monotonic()
                    if self.stalled or self.behind:
                        self._cond.wait()  # silent but open
                        next_tick = max(next_tick, time.monotonic())
                        continue
                    if self._lines:
                        item = self._lines.popleft()
                        break
                    if now >= next_tick:
                        item = tick_line
                        next_tick += interval
                        if next_tick <= now:  # late: Go's ticker drops missed ticks
                            next_tick = now + interval
                        break
                    self._cond.wait(next_tick - now)
            yield item


class ListenHub:
    """Every open listen stream, and the fault switches that act on them."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.escape_keys = False
        self.keepalive_interval = 0.5
        self.queue_size = DEFAULT_QUEUE_SIZE
        #: "minio": served; else one of ``refusals.KINDS`` for every access key
        #: ("not-implemented": MinIO without listen support; "ignored": a listing).
        self.api = "minio"
        #: Access key -> one of ``refusals.KINDS``: how that key's listen is refused
        #: (a restricted user: "access-denied"), whatever ``api`` says.
        self.refusals: dict[str, str] = {}
        self._lock = threading.Lock()
        self._streams: list[ListenStream] = []
        self._lose: list[str] = []  # key prefixes of the next created events to lose
        self.connects_total = 0
        self._dropped_by_closed = 0  # events dropped by streams already closed

    def refusal(self, access_key: str) -> str | None:
        """How a listen request signed with ``access_key`` is refused; None: served."""
        how = self.refusals.get(access_key, self.api)
        return None if how == "minio" else how

    # -- streams ----------------------------------------------------------------

    def open(self, stream: ListenStream) -> None:
        """Subscribe a stream; called before a single byte of its response is written."""
        with self._lock:
            self._streams.append(stream)
            self.connects_total += 1

    def closed(self, stream: ListenStream) -> None:
        with self._lock:
            if stream in self._streams:
                self._streams.remove(stream)
                self._dropped_by_closed += stream.dropped

    @property
    def open_count(self) -> int:
        with self._lock:
            return len(self._streams)

    @property
    def dropped_total(self) -> int:
        """Events dropped for readers that fell behind, by every stream so far."""
        with self._lock:
            return self._dropped_by_closed + sum(stream.dropped for stream in self._streams)

    def _each(self) -> list[ListenStream]:
        with self._lock:
            return list(self._streams)

    def drop_all(self, abort: bool = False) -> None:
        with self._lock:
            streams, self._streams = self._streams, []
            self._dropped_by_closed += sum(stream.dropped for stream in streams)
        for stream in streams:
            stream.close(abort=abort)

    def stall_all(self) -> None:
        for stream in self._each():
            stream.stall()

    def fall_behind(self, queue_size: int = 1) -> None:
        """Every open stream's reader falls behind: at most ``queue_size`` events wait, the
        rest are dropped, until :meth:`catch_up`."""
        for stream in self._each():
            stream.fall_behind(queue_size)

    def catch_up(self) -> None:
        for stream in self._each():
            stream.catch_up()

    def lose_next_event(self, prefix: str = "") -> None:
        """The next created event whose key starts with ``prefix`` reaches no stream."""
        with self._lock:
            self._lose.append(prefix)

    # -- fan-out ----------------------------------------------------------------

    def publish(self, events: Sequence[ObjectEvent]) -> None:
        """Deliver events to every stream that wants them, one record per line."""
        with self._lock:
            streams = list(self._streams)
            kept = []
            for event in events:
                lost = next(
                    (p for p in self._lose if event.created and event.key.startswith(p)), None
                )
                if lost is not None:
                    self._lose.remove(lost)
                    continue
                kept.append(event)
        if not kept or not streams:
            return
        escape = self.escape_keys
        for event in kept:
            line = encode_line(build_record(event, escape=escape, endpoint=self.endpoint))
            for stream in streams:
                if stream.wants(event):
                    stream.send(line)
