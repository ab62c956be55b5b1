"""A session's runs on the app's disk: one flat folder of images per run.

Moved in when a run is kept, named where a stored run's images will be fetched
to, and deleted as fast as a folder of plain files allows. The moves and
deletions touch the disk, so ``sessions.py`` runs them in a worker thread.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ..history import RunRecord
from .form import HistoryEntry


def entry_of_record(record: RunRecord, cache: Path) -> HistoryEntry:
    """A history entry for a stored run, its images named where the cache will hold them."""
    folder = cache / record.run_id
    return HistoryEntry(
        images=[str(folder / name) for name in record.images],
        prompt=record.prompt,
        negative_prompt=record.negative_prompt,
        seed=record.seed,
        steps=record.steps,
        guidance_scale=record.guidance_scale,
        size=f"{record.width}x{record.height}",
        num_images=record.num_images,
        model=record.model,
        run=record.run_id,
    )


def settle(source: Path, target: Path) -> int:
    """Move a run's folder to ``target`` (unless it is there already); its size in bytes."""
    if source != target:
        shutil.move(str(source), str(target))
    return sum(entry.stat().st_size for entry in target.iterdir() if entry.is_file())


def link_from(missing: list[Path], cached: Path) -> list[Path]:
    """Link each missing image from ``cached``, the same run's folder in another login's
    cache (of the same identity, whose history it shares); returns those it lacked.

    Logins of OSCAR's one basic-auth account share one history: each fetching every
    thumbnail from the cluster made a click cost more the more people were signed in.
    A hard link costs no read, and the file outlives the other login's folder.
    """
    left = []
    for path in missing:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            os.link(cached / path.name, path)
        except FileExistsError:
            continue
        except OSError:  # not there (any more), or another filesystem: fetched instead
            left.append(path)
    return left


def remove_runs(folders: list[Path]) -> None:
    """Delete run folders: flat folders of images, so each file is unlinked by name
    (cheaper than rmtree's walk, which opens and checks every folder on the way)."""
    for folder in folders:
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    os.unlink(entry.path)
            os.rmdir(folder)
        except FileNotFoundError:
            continue
        except OSError:  # not flat after all: the general way
            shutil.rmtree(folder, ignore_errors=True)


def remove_all(folders: list[Path]) -> None:
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)
