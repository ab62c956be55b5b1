"""MinIO event records: their exact JSON shape and the listen filters.

MinIO's listen extension and its webhook targets send records shaped like the
AWS S3 event message, with ``eventSource: "minio:s3"``.  The client under test
parses these, so the shape here copies what a MinIO server really sends.
"""

from __future__ import annotations

import itertools
import json
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from urllib.parse import quote_plus

OBJECT_CREATED_PUT = "s3:ObjectCreated:Put"
OBJECT_CREATED_COPY = "s3:ObjectCreated:Copy"
OBJECT_CREATED_MULTIPART = "s3:ObjectCreated:CompleteMultipartUpload"
OBJECT_REMOVED_DELETE = "s3:ObjectRemoved:Delete"

# MinIO's sequencer is a hex nanosecond clock; a counter keeps it strictly increasing.
_sequence = itertools.count(time.time_ns())
_DEPLOYMENT_ID = str(uuid.uuid4())


@dataclass(frozen=True)
class ObjectEvent:
    """One thing that happened to one object: what a record is built from."""

    name: str
    bucket: str
    key: str
    size: int | None = None
    etag: str | None = None
    content_type: str | None = None
    user_metadata: Mapping[str, str] = field(default_factory=dict)
    principal: str = "minioadmin"
    source_host: str = "127.0.0.1"
    user_agent: str = ""

    @property
    def created(self) -> bool:
        return self.name.startswith("s3:ObjectCreated:")


def escape_key(key: str) -> str:
    """Escape a key the way MinIO's webhook targets (Go's url.QueryEscape) do.

    ``/`` becomes ``%2F`` and a space becomes ``+``: ``quote_plus(key, safe="")``.
    """
    return quote_plus(key, safe="")


def event_matches(patterns: Sequence[str], name: str) -> bool:
    """True if ``name`` is one of ``patterns``; ``s3:ObjectCreated:*`` is a wildcard."""
    if not patterns:
        return True
    for pattern in patterns:
        if pattern == name:
            return True
        if pattern.endswith("*") and name.startswith(pattern[:-1]):
            return True
    return False


def build_record(event: ObjectEvent, *, escape: bool, endpoint: str) -> dict:
    """A record exactly in MinIO's shape (``Records[i]`` of a listen line)."""
    obj: dict = {"key": escape_key(event.key) if escape else event.key}
    if event.created:
        obj["size"] = event.size or 0
        obj["eTag"] = (event.etag or "").strip('"')
        obj["contentType"] = event.content_type or "application/octet-stream"
        obj["userMetadata"] = {"content-type": obj["contentType"], **event.user_metadata}
    obj["sequencer"] = f"{next(_sequence):X}"
    now = datetime.now(timezone.utc)
    return {
        "eventVersion": "2.0",
        "eventSource": "minio:s3",
        "awsRegion": "",
        "eventTime": now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z",
        "eventName": event.name,
        "userIdentity": {"principalId": event.principal},
        "requestParameters": {
            "principalId": event.principal,
            "region": "",
            "sourceIPAddress": event.source_host,
        },
        "responseElements": {
            "x-amz-id-2": uuid.uuid4().hex,
            "x-amz-request-id": uuid.uuid4().hex[:16].upper(),
            "x-minio-deployment-id": _DEPLOYMENT_ID,
            "x-minio-origin-endpoint": endpoint,
        },
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "Config",
            "bucket": {
                "name": event.bucket,
                "ownerIdentity": {"principalId": event.principal},
                "arn": f"arn:aws:s3:::{event.bucket}",
            },
            "object": obj,
        },
        "source": {"host": event.source_host, "port": "", "userAgent": event.user_agent},
    }


def encode_line(record: dict) -> bytes:
    """One listen line: ``{"Records":[<one event>]}`` and a newline, as Go's JSON encoder
    writes ``struct{ Records []event.Event }`` (cmd/listen-notification-handlers.go)."""
    return json.dumps({"Records": [record]}, separators=(",", ":")).encode() + b"\n"
