"""MinIO's listen extension: open streams and the fan-out of events to them.

``GET /<bucket>?prefix=&suffix=&events=...`` answers 200 with a chunked body of
JSON lines.  Each stream owns a queue that its own server thread drains, so a
publisher never blocks on a slow reader and an event costs one queue hand-off
(microseconds), not a polling interval.
"""

from __future__ import annotations

import queue
import socket
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from .events import ObjectEvent, build_record, encode_line, event_matches

_CLOSE = object()  # end the response cleanly: the client sees EOF and reconnects
_WAKE = object()  # re-check the stream's state (stalled)
PING_LINE = b'{"Records":null}\n'


@dataclass(eq=False)
class ListenStream:
    """One open listen response."""

    bucket: str
    prefix: str
    suffix: str
    events: Sequence[str]
    keepalive_interval: float
    keepalive_payload: bytes = b"\n"
    ping: float | None = None
    sock: socket.socket | None = None
    stalled: bool = False
    _queue: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)
    _closed: threading.Event = field(default_factory=threading.Event)

    def wants(self, event: ObjectEvent) -> bool:
        return (
            event.bucket == self.bucket
            and event.key.startswith(self.prefix)
            and event.key.endswith(self.suffix)
            and event_matches(self.events, event.name)
        )

    def send(self, line: bytes) -> None:
        if not self.stalled:
            self._queue.put(line)

    def stall(self) -> None:
        self.stalled = True
        self._queue.put(_WAKE)

    def close(self, abort: bool = False) -> None:
        """End the response; ``abort`` resets the TCP connection instead (a crash)."""
        self._closed.set()
        self._queue.put(_CLOSE)
        if abort and self.sock is not None:
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def body(self) -> Iterator[bytes]:
        """The chunked response body, run by the server thread serving this request."""
        yield b""  # makes the server send the headers now: the stream is live
        if self.ping:
            idle_line, interval = PING_LINE, self.ping
        else:
            idle_line, interval = self.keepalive_payload, self.keepalive_interval
        while not self._closed.is_set():
            if self.stalled:
                self._closed.wait()  # silent but open until dropped or the double stops
                return
            try:
                item = self._queue.get(timeout=interval)
            except queue.Empty:
                item = idle_line
            if item is _CLOSE:
                return
            if item is _WAKE or self.stalled:
                continue
            yield item


class ListenHub:
    """Every open listen stream, and the fault switches that act on them."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.escape_keys = False
        self.batch_records = False
        self.keepalive_interval = 1.0
        self.keepalive_payload = b"\n"
        self._lock = threading.Lock()
        self._streams: list[ListenStream] = []
        self._lose_next_created = 0
        self.connects_total = 0

    # -- streams ----------------------------------------------------------------

    def open(self, stream: ListenStream) -> None:
        """Register a stream; called before its response headers are sent."""
        with self._lock:
            self._streams.append(stream)
            self.connects_total += 1

    def closed(self, stream: ListenStream) -> None:
        with self._lock:
            if stream in self._streams:
                self._streams.remove(stream)

    @property
    def open_count(self) -> int:
        with self._lock:
            return len(self._streams)

    def drop_all(self, abort: bool = False) -> None:
        with self._lock:
            streams, self._streams = self._streams, []
        for stream in streams:
            stream.close(abort=abort)

    def stall_all(self) -> None:
        with self._lock:
            streams = list(self._streams)
        for stream in streams:
            stream.stall()

    def lose_next_event(self) -> None:
        with self._lock:
            self._lose_next_created += 1

    # -- fan-out ----------------------------------------------------------------

    def publish(self, events: Sequence[ObjectEvent]) -> None:
        """Deliver events that happened together to every stream that wants them."""
        with self._lock:
            streams = list(self._streams)
            kept = []
            for event in events:
                if event.created and self._lose_next_created:
                    self._lose_next_created -= 1
                    continue
                kept.append(event)
        if not kept or not streams:
            return
        escape, batch = self.escape_keys, self.batch_records
        records = {id(e): build_record(e, escape=escape, endpoint=self.endpoint) for e in kept}
        for stream in streams:
            wanted = [e for e in kept if stream.wants(e)]
            if not wanted:
                continue
            if batch:
                stream.send(encode_line([records[id(e)] for e in wanted], wanted))
            else:
                for e in wanted:
                    stream.send(encode_line([records[id(e)]], [e]))
