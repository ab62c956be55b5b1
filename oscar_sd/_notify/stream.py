"""The stream reader: open MinIO's listen stream, read its lines, reconnect.

MinIO (``cmd/listen-notification-handlers.go``) subscribes the request and
then writes nothing, not even the response headers, until the first event or
tick. Without ``ping`` the tick is a single space every 500 ms, so the
headers arrive within about half a second: that is when the hub knows the
server has subscribed, and when requests may upload. A read timeout of a few
seconds (the storage client's ``stall_timeout``) then detects a stream that
went silent.

The reader runs in a thread of the hub (``hub.py``) and reports to it through
:class:`StreamOwner`, so this file does not depend on the hub.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Protocol

from .backoff import Backoff
from .records import created_keys, lines
from .source import ListenResponse, ListenUnsupported, NotificationSource, StreamAddress
from .stats import HubStats


class StreamOwner(Protocol):
    """What the reader needs from its hub."""

    address: StreamAddress
    source: NotificationSource
    stats: HubStats
    backoff: Backoff
    stop_event: threading.Event
    unsupported_retry: float

    def keep_running(self, me: threading.Thread) -> bool: ...
    def on_connected(self, response: ListenResponse, reconnect: bool) -> None: ...
    def on_listen_unsupported(self, refusal: str = "") -> None: ...
    def on_disconnected(self, response: ListenResponse) -> None: ...
    def catch_up(self) -> None: ...
    def on_landed(self, keys: Iterable[str], via: str) -> None: ...
    def on_open_failed(self) -> None: ...
    def on_trouble(self, what: str, exc: BaseException, attempt: int) -> None: ...
    def note_error(self, what: str, exc: BaseException | None, loud: bool = True) -> None: ...


def read_stream(hub: StreamOwner, me: threading.Thread) -> None:
    """The reader thread: connect, catch up, read lines; reconnect with backoff."""
    attempt = 0
    while hub.keep_running(me):
        try:
            response = hub.source.open_listen(hub.address.bucket, hub.address.prefix)
        except ListenUnsupported as refused:
            hub.on_listen_unsupported(str(refused))
            hub.stop_event.wait(hub.unsupported_retry)  # ask again, quietly, much later
            continue
        except Exception as exc:
            hub.on_open_failed()
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


def on_line(hub: StreamOwner, line: bytes) -> None:
    """Hand the created keys of one line to the hub."""
    keys = created_keys(line)
    if keys is None:
        hub.note_error("ignored a malformed notification line", None)
    elif keys:
        hub.on_landed(keys, via="event")
