"""What the notification machinery needs from storage, and which stream it is.

The storage client (``oscar_sd/_storage.py``, MinIO) implements
:class:`NotificationSource`; tests and benchmarks may pass their own.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class StreamAddress:
    """Identifies one shared stream: which storage, whose keys, which bucket and folder."""

    endpoint: str
    bucket: str
    prefix: str
    access_key: str = field(default="", repr=False)  # never in a log line


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
    def list_aged(self, bucket: str, prefix: str, limit: int) -> list[tuple[str, float]]:
        """Up to ``limit`` (key, last modified as a Unix time) directly under ``prefix``."""
        ...
    def metadata(self, bucket: str, key: str) -> dict[str, str] | None:
        """The object's ``x-amz-meta-*`` fields (prefix dropped), None if it is gone."""
        ...


class ListenUnsupported(Exception):
    """The storage server does not offer MinIO's listen API."""
