"""The listen stream's wire format: lines, and the created keys in each.

MinIO (``cmd/listen-notification-handlers.go``) writes each event as its own
line, ``{"Records":[<one event>]}``, a ping as ``{"Records":null}``, and
without ``ping`` a single space every 500 ms. Webhook targets may batch
several records in one line; both are accepted.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

from .source import ListenResponse

#: Record names that mean "an object now exists" (Put, Post, Copy, CompleteMultipartUpload).
CREATED_EVENTS = "s3:ObjectCreated:"


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
