"""Sharing a run: where its images can be read without the owner's keys, for a while.

:func:`share_locations` names each image of a run so that someone else can
read it until the link expires: on a cluster a presigned GET URL, signed with
the owner's MinIO keys (S3 caps them at 7 days, ``MAX_SHARE_SECONDS``); in
local mode the file's path. :func:`read_shared` reads one back. The app seals
these in an encrypted, signed token (``oscar_sd/ui/share.py``), so nobody can
forge or alter one; a path is still read only under the data folder. An image
kept in its run's pack (``_record.py``) is its pack's location with
``#bytes=<offset>-<length>`` after it, read back with a ranged GET.
"""

from __future__ import annotations

from pathlib import Path

import anyio.to_thread
import urllib3

from ._history import History
from ._record import RunRecord

#: The longest a presigned S3 URL may live (SigV4: 7 days).
MAX_SHARE_SECONDS = 7 * 24 * 3600
#: The largest image read back for a share page.
MAX_SHARED_BYTES = 32 * 1024 * 1024
#: Between a pack's location and an image's (offset, length) in it.
RANGE = "#bytes="

_http = urllib3.PoolManager(timeout=urllib3.Timeout(connect=10, read=60), retries=2)


async def share_locations(history: History, record: RunRecord, expires: float) -> dict[str, str]:
    """Image name -> where it can be read for ``expires`` seconds."""
    seconds = min(expires, MAX_SHARE_SECONDS)

    def locate(name: str) -> str:
        key, byte_range = record.where(name)
        location = history.objects.locate(key, seconds)
        if byte_range is None:
            return location
        return f"{location}{RANGE}{byte_range[0]}-{byte_range[1]}"

    def locate_all() -> dict[str, str]:
        return {name: locate(name) for name in record.images}

    return await anyio.to_thread.run_sync(locate_all)


async def read_shared(location: str, data_folder: Path) -> bytes:
    """The bytes at a location :func:`share_locations` made; KeyError when gone."""
    return await anyio.to_thread.run_sync(_read, location, data_folder)


def _read(location: str, data_folder: Path) -> bytes:
    location, _, ranged = location.partition(RANGE)
    offset, _, length = ranged.partition("-")
    byte_range = (int(offset), int(length)) if ranged else None
    if byte_range is not None and not 0 < byte_range[1] <= MAX_SHARED_BYTES:
        raise KeyError(location)
    if location.startswith(("http://", "https://")):
        headers = {} if byte_range is None else {
            "Range": f"bytes={byte_range[0]}-{byte_range[0] + byte_range[1] - 1}"}
        response = _http.request("GET", location, headers=headers, preload_content=False)
        try:
            if response.status != (200 if byte_range is None else 206):
                raise KeyError(location)
            data = response.read(MAX_SHARED_BYTES + 1)
        finally:
            response.release_conn()
        if len(data) > MAX_SHARED_BYTES:
            raise KeyError(location)
        return data
    path = Path(location).resolve()
    if not path.is_relative_to(data_folder.expanduser().resolve()) or not path.is_file():
        raise KeyError(location)
    if byte_range is None:
        return path.read_bytes()
    with path.open("rb") as file:
        file.seek(byte_range[0])
        return file.read(byte_range[1])
