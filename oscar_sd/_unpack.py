"""Unpack a result archive without trusting it.

The zip comes from a bucket that other people's jobs (or a compromised
service) can write to, so every entry is checked before a byte reaches disk:
no absolute paths or ``..``, no links, a bounded number of entries and bytes,
and only images that Pillow can open.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import stat
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from PIL import Image

from ._errors import InvalidResultError

MAX_ENTRIES = 64
MAX_TOTAL_BYTES = 64 * 1024 * 1024
#: A new file only (O_EXCL: an archive naming one twice fails), never through a link.
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)


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
            with _bombs_are_errors():
                for info in sorted(entries, key=lambda entry: _natural_key(entry.filename)):
                    target = _safe_target(info, destination)
                    data = _read_bounded(zipped, info, budget)
                    budget -= len(data)
                    _check_image(data, info.filename)
                    if target.parent != destination:
                        target.parent.mkdir(parents=True, exist_ok=True)
                    _write_new(target, data, info.filename)
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
    with _bombs_are_errors():
        _check_image(data, name)


@contextlib.contextmanager
def _bombs_are_errors() -> Iterator[None]:
    """A decompression bomb is an attack, not a warning (set once per archive: not free)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        yield


def _check_image(data: bytes, name: str) -> None:
    """Pillow's ``verify``: it reads the image's structure and checksums (a PNG's chunks
    and CRCs) without decoding its pixels, so each image is read once, never decoded."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
    except Exception:
        raise InvalidResultError(f"{name!r} in the result is not an image.") from None


def _write_new(target: Path, data: bytes, name: str) -> None:
    """Write ``data`` to a file that must not exist yet: one open, unbuffered writes."""
    try:
        descriptor = os.open(target, _NEW_FILE, 0o600)
    except FileExistsError:
        raise InvalidResultError(f"The result archive names {name!r} twice.") from None
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(descriptor, view):]
    finally:
        os.close(descriptor)


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
    return destination.joinpath(*path.parts)  # one named twice fails on writing (O_EXCL)


def _read_bounded(zipped: zipfile.ZipFile, info: zipfile.ZipInfo, budget: int) -> bytes:
    """Read one entry, counting real bytes: the sizes a zip declares can lie."""
    too_big = InvalidResultError(
        f"The result archive unpacks to more than {MAX_TOTAL_BYTES // (1024 * 1024)} MB."
    )
    if info.file_size > budget:
        raise too_big
    with zipped.open(info) as entry:
        # One read of at most budget + 1 bytes: inflating stops there, and one more
        # byte than allowed proves the entry too big whatever its header claims.
        data = entry.read(budget + 1)
    if len(data) > budget:
        raise too_big
    return data


def _natural_key(name: str) -> list[object]:
    """Sort "2.png" before "10.png"."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _remove(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


def unpack_result(key: str, data: bytes, directory: Path) -> list[Path]:
    """Write the images of result object ``key`` into a new private ``directory``:
    our zip, or the one bare PNG of the upstream example service."""
    directory.mkdir(mode=0o700)
    if key.endswith(".zip"):
        return unpack_images(data, directory)
    check_image(data, Path(key).name)
    image = directory / "1.png"
    image.write_bytes(data)
    return [image]
