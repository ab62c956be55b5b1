"""Result archives are unpacked only when every entry is a safe image."""

from __future__ import annotations

import io
import stat
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from oscar_sd import InvalidResultError
from oscar_sd._unpack import MAX_ENTRIES, MAX_TOTAL_BYTES, unpack_images


def png(color: tuple[int, int, int] = (200, 30, 30), size: int = 8) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buffer, format="PNG")
    return buffer.getvalue()


def archive(entries: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as zipped:
        for name, data in entries.items():
            zipped.writestr(name, data)
    return buffer.getvalue()


def test_images_come_out_in_natural_order(tmp_path: Path) -> None:
    entries = {f"{i}.png": png((i * 20, 0, 0)) for i in (10, 2, 1)}
    images = unpack_images(archive(entries), tmp_path)
    assert [p.name for p in images] == ["1.png", "2.png", "10.png"]
    assert Image.open(images[2]).getpixel((0, 0)) == (200, 0, 0)


@pytest.mark.parametrize(
    "name", ["../evil.png", "/etc/evil.png", "a/../../evil.png", "C:/evil.png", "a\\..\\evil.png"]
)
def test_zip_slip_is_rejected_and_nothing_escapes(tmp_path: Path, name: str) -> None:
    destination = tmp_path / "out"
    destination.mkdir()
    with pytest.raises(InvalidResultError, match="unsafe path"):
        unpack_images(archive({"1.png": png(), name: png()}), destination)
    assert not (tmp_path / "evil.png").exists()
    assert list(destination.rglob("*")) == []  # nothing half-written stays behind


def test_links_are_rejected(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zipped:
        link = zipfile.ZipInfo("1.png")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zipped.writestr(link, "/etc/passwd")
    with pytest.raises(InvalidResultError, match="link"):
        unpack_images(buffer.getvalue(), tmp_path)
    assert not (tmp_path / "1.png").exists()


def test_a_zip_bomb_is_stopped_by_the_byte_budget(tmp_path: Path) -> None:
    bomb = archive({"1.png": b"\0" * (MAX_TOTAL_BYTES + 1)}, zipfile.ZIP_DEFLATED)
    assert len(bomb) < 1_000_000  # small on the wire, huge when unpacked
    with pytest.raises(InvalidResultError, match="more than 64 MB"):
        unpack_images(bomb, tmp_path)


def test_a_bomb_that_lies_about_its_size_is_still_stopped(tmp_path: Path) -> None:
    bomb = bytearray(archive({"1.png": b"\0" * (MAX_TOTAL_BYTES + 1)}, zipfile.ZIP_DEFLATED))
    # Rewrite the declared uncompressed size (local header and central directory) to 1 byte.
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        at = bytes(bomb).index(signature)
        bomb[at + offset : at + offset + 4] = (1).to_bytes(4, "little")
    with pytest.raises(InvalidResultError):
        unpack_images(bytes(bomb), tmp_path)
    assert sum(p.stat().st_size for p in tmp_path.rglob("*") if p.is_file()) == 0


def test_the_byte_budget_counts_all_entries_together(tmp_path: Path) -> None:
    # Five images of a quarter of the budget each: every one fits alone, not all together.
    padding = b"\0" * (MAX_TOTAL_BYTES // 4)
    entries = {f"{i}.png": png((i * 40, 0, 0)) + padding for i in range(1, 6)}
    assert all(len(data) < MAX_TOTAL_BYTES for data in entries.values())
    assert sum(map(len, entries.values())) > MAX_TOTAL_BYTES
    assert len(entries) < MAX_ENTRIES
    with pytest.raises(InvalidResultError, match="more than 64 MB"):
        unpack_images(archive(entries, zipfile.ZIP_DEFLATED), tmp_path)
    assert list(tmp_path.iterdir()) == []  # the entries read before the limit are removed


def test_too_many_entries(tmp_path: Path) -> None:
    entries = {f"{i}.png": png() for i in range(MAX_ENTRIES + 1)}
    with pytest.raises(InvalidResultError, match="entries"):
        unpack_images(archive(entries), tmp_path)


def test_non_images_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(InvalidResultError, match="not an image"):
        unpack_images(archive({"1.png": png(), "2.png": b"#!/bin/sh\nrm -rf /\n"}), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_corrupt_archive_is_reported(tmp_path: Path) -> None:
    with pytest.raises(InvalidResultError, match="corrupt"):
        unpack_images(b"PK\x03\x04 this is not really a zip", tmp_path)


def test_an_empty_archive_is_reported(tmp_path: Path) -> None:
    with pytest.raises(InvalidResultError, match="no images"):
        unpack_images(archive({}), tmp_path)
