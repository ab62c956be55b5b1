"""The stream reader: open MinIO's listen stream, read its lines, reconnect.

MinIO (``cmd/listen-notification-handlers.go``) subscribes the request and
then writes nothing, not even the response headers, until the first event or
tick. Without ``ping`` the tick is a single space every 500 ms, so the
headers arrive within about half a second: that is when the hub knows the
server has subscribed, and when requests may upload. A read timeout of a few
seconds (the storage client's ``stall_timeout``) then detects a stream that
went silent.

Each event is its own line, ``{"Records":[<one event>]}``; the reader also
accepts several records per line (webhook targets batch them).
"""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ._hub import NotificationHub

#: Record names that mean "an object now exists" (Put, Post, Copy, CompleteMultipartUpload).
CREATED_EVENTS = "s3:ObjectCreated:"


class ListenResponse(Protocol):
    """The streaming HTTP response of a listen request (a urllib3 response)."""

    def read1(self, amt: int | None = None) -> bytes: ...
    def shutdown(self) -> None: ...
    def close(self) -> None: ...
    def release_conn(self) -> None: ...


class NotificationSource(Protocol):
    """What the hub needs from storage."""

    def open_listen(self, bucket: str, prefix: str) -> ListenResponse: ...
    def list_keys(self, bucket: str, prefix: str) -> Iterable[str]: ...
    def remove(self, bucket: str, keys: list[str]) -> list[str]: ...


class ListenUnsupported(Exception):
    """The storage server does not offer MinIO's listen API."""


@dataclass(frozen=True)
class Backoff:
    """Capped exponential backoff with full jitter, in seconds."""

    base: float = 0.05
    cap: float = 5.0

    def delay(self, attempt: int) -> float:
        return random.uniform(0, min(self.cap, self.base * 2**attempt))


def read_stream(hub: NotificationHub, me: threading.Thread) -> None:
    """The reader thread: connect, catch up, read lines; reconnect with backoff."""
    attempt = 0
    while hub.keep_running(me):
        try:
            response = hub.source.open_listen(hub.address.bucket, hub.address.prefix)
        except ListenUnsupported:
            hub.on_listen_unsupported()
            hub.stop_event.wait(hub.unsupported_retry)  # ask again, quietly, much later
            continue
        except Exception as exc:
            hub.on_trouble("could not open the notification stream", exc, attempt)
            hub.stop_event.wait(hub.backoff.delay(attempt))
            attempt += 1
            continue
        hub.stats.connects += 1
        hub.on_connected(response, reconnect=attempt > 0)
        try:
            hub.catch_up()
            for line in lines(response):
                attempt = 0  # the stream proved healthy
                on_line(hub, line)
                if not hub.keep_running(me):
                    break
        except Exception as exc:  # dropped, stalled (read timeout) or interrupted
            if not hub.stop_event.is_set():
                hub.note_error("the notification stream dropped", exc)
        finally:
            hub.on_disconnected(response)
        # Back off before reconnecting, so a server that keeps closing the stream
        # at once is not hammered; the first retry comes quickly.
        hub.stop_event.wait(hub.backoff.delay(attempt))
        attempt += 1


def on_line(hub: NotificationHub, line: bytes) -> None:
    """Hand the created keys of one line to the hub."""
    keys = created_keys(line)
    if keys is None:
        hub.note_error("ignored a malformed notification line", None)
    elif keys:
        hub.on_landed(keys, via="event")


def lines(response: ListenResponse) -> Iterator[bytes]:
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


def created_keys(line: bytes) -> list[str] | None:
    """The keys of the ``s3:ObjectCreated:*`` records of a line; None if it is not JSON."""
    line = line.strip()
    if not line:  # a keep-alive: the stream is alive, nothing to do
        return []
    try:
        records = json.loads(line).get("Records") or []  # {"Records": null} is a ping
    except (ValueError, AttributeError):
        return None
    keys = []
    for record in records:
        if not str(record.get("eventName", "")).startswith(CREATED_EVENTS):
            continue
        key = record.get("s3", {}).get("object", {}).get("key")
        if isinstance(key, str):
            keys.append(key)
    return keys
