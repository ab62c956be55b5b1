"""A history in a folder on this computer (local mode).

The folder is the ``OSCAR_SD_DATA_DIR`` setting (default: the user's data
directory, ``~/.local/share/oscar-sd`` on Linux), so the runs survive reloads,
restarts and reboots. Keys are relative paths inside it; a key that would
leave the folder is refused.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path


def default_data_dir() -> Path:
    """Where local history is kept unless ``OSCAR_SD_DATA_DIR`` says otherwise: the
    platform's per-user data folder (XDG on Linux)."""
    home = Path.home()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or home / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = home / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or home / ".local" / "share")
    return base / "oscar-sd"


class DiskObjects:
    """:class:`~oscar_sd.history.Objects` as files under ``folder``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder.expanduser().resolve()
        self.description = f"this computer ({self.folder})"
        self.place = str(self.folder)

    def _path(self, key: str) -> Path:
        path = (self.folder / key).resolve()
        if not path.is_relative_to(self.folder) or path == self.folder:
            raise ValueError(f"not a key of this history: {key!r}")
        return path

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Written aside, then renamed: a crash never leaves half a file under the key.
        partial = path.with_name(path.name + ".partial")
        partial.write_bytes(data)
        os.replace(partial, path)

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise KeyError(key) from None

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        try:
            with self._path(key).open("rb") as file:
                file.seek(offset)
                return file.read(length)
        except FileNotFoundError:
            raise KeyError(key) from None

    def _top(self, prefix: str) -> Path | None:
        """The folder a prefix names, None when there is none."""
        top = self._path(prefix.rstrip("/")) if prefix.strip("/") else self.folder
        return top if top.is_dir() else None

    def list(self, prefix: str) -> list[str]:
        top = self._top(prefix)
        if top is None:
            return []
        keys = []
        for root, _, files in os.walk(top):
            for name in files:
                if not name.endswith(".partial"):
                    keys.append(Path(root, name).relative_to(self.folder).as_posix())
        return keys

    def folders(self, prefix: str) -> list[str]:
        top = self._top(prefix)
        if top is None:
            return []
        with os.scandir(top) as entries:
            return [entry.name for entry in entries if entry.is_dir()]

    def locate(self, key: str, expires: float) -> str:
        return str(self._path(key))  # read back only under the data folder (_share.py)

    def remove(self, keys: list[str]) -> None:
        folders = set()
        for key in keys:
            path = self._path(key)
            path.unlink(missing_ok=True)
            folders.add(path.parent)
        for folder in folders:  # a run's folder goes with its last file
            if folder != self.folder and folder.is_dir() and not any(folder.iterdir()):
                shutil.rmtree(folder, ignore_errors=True)
