"""The seam under a history: a flat namespace of keyed objects, blocking calls.

Two kinds sit behind it: a folder on this computer (``_disk.py``, local mode)
and a bucket of the signed-in identity on the cluster's MinIO
(``_minio.py``). :class:`~oscar_sd.history.History` runs every call in a
worker thread.
"""

from __future__ import annotations

from typing import Protocol


class Objects(Protocol):
    """Where one identity's history lives. Every method blocks."""

    #: Says where, for the page and the log (never a key or a secret).
    description: str
    #: Which storage this is, the same for every object over it (two logins of one
    #: account share their history): the app's sessions share cached images by it.
    place: str

    def put(self, key: str, data: bytes) -> None: ...

    def get(self, key: str) -> bytes:
        """The object's bytes; :class:`KeyError` when there is none."""
        ...

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        """``length`` bytes of the object from ``offset``; :class:`KeyError` when none."""
        ...

    def list(self, prefix: str) -> list[str]:
        """Every key under ``prefix``."""
        ...

    def folders(self, prefix: str) -> list[str]:
        """The names of the folders directly under ``prefix`` (S3: its common prefixes
        with the delimiter "/"), without their contents."""
        ...

    def remove(self, keys: list[str]) -> None: ...

    def locate(self, key: str, expires: float) -> str:
        """Where ``key`` can be read for ``expires`` seconds without this identity's
        keys (a share link): a presigned URL, or a file path locally."""
        ...
