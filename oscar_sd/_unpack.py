"""Unpack a result archive without trusting it.

The zip comes from a bucket that other people's jobs (or a compromised
service) can write to, so every entry is checked before a byte reaches disk:
no absolute paths or ``..``, no links, a bounded number of entries and bytes,
and only images that Pillow can open.
"""

from __future__ import annotations

import io
import re
import stat
import warnings
import zipfile
from pathlib import Path, PurePosixPath

from PIL import Image

from ._errors import InvalidResultError

MAX_ENTRIES = 64
MAX_TOTAL_BYTES = 64 * 1024 * 1024
_CHUNK = 1024 * 1024


def unpack_images(archive: bytes, destination: Path) -> list[Path]:
    """Extract the images of ``archive`` into ``destination``, in their natural order.

    Raises :class:`InvalidResultError` (and leaves nothing half-written behind
    in ``destination``) when the archive is corrupt or hostile.
    """
    written: list[Path] = []
    try:
        with zipfile.ZipFile(io.BytesIO(archive)) as zipped:
            entries = [info for info in zipped.infolist() if not info.is_dir()]
            if not entries:
                raise InvalidResultError("The result archive holds no images.")
            if len(zipped.infolist()) > MAX_ENTRIES:
                raise InvalidResultError(
                    f"The result archive has {len(zipped.infolist())} entries; "
                    f"at most {MAX_ENTRIES} are accepted."
                )
            budget = MAX_TOTAL_BYTES
            for info in sorted(entries, key=lambda entry: _natural_key(entry.filename)):
                target = _safe_target(info, destination)
                data = _read_bounded(zipped, info, budget)
                budget -= len(data)
                check_image(data, info.filename)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
                written.append(target)
    except InvalidResultError:
        _remove(written)
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError, OSError) as exc:
        _remove(written)
        raise InvalidResultError(f"The result archive is corrupt ({exc}).") from None
    return written


def check_image(data: bytes, name: str) -> None:
    """Raise :class:`InvalidResultError` unless ``data`` is an image Pillow can open."""
    try:
        with warnings.catch_warnings():
            # A decompression bomb is an attack, not a warning.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                image.verify()
    except Exception:
        raise InvalidResultError(f"{name!r} in the result is not an image.") from None


def _safe_target(info: zipfile.ZipInfo, destination: Path) -> Path:
    name = info.filename
    path = PurePosixPath(name)
    if (
        not name
        or "\\" in name
        or path.is_absolute()
        or ".." in path.parts
        or re.match(r"^[A-Za-z]:", name)
    ):
        raise InvalidResultError(f"The result archive has an unsafe path: {name!r}.")
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise InvalidResultError(f"The result archive has a link: {name!r}.")
    target = destination.joinpath(*path.parts)
    if target.exists():
        raise InvalidResultError(f"The result archive names {name!r} twice.")
    return target


def _read_bounded(zipped: zipfile.ZipFile, info: zipfile.ZipInfo, budget: int) -> bytes:
    """Read one entry, counting real bytes: the sizes a zip declares can lie."""
    too_big = InvalidResultError(
        f"The result archive unpacks to more than {MAX_TOTAL_BYTES // (1024 * 1024)} MB."
    )
    if info.file_size > budget:
        raise too_big
    data = bytearray()
    with zipped.open(info) as entry:
        while chunk := entry.read(_CHUNK):
            data += chunk
            if len(data) > budget:
                raise too_big
    return bytes(data)


def _natural_key(name: str) -> list[object]:
    """Sort "2.png" before "10.png"."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _remove(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)
