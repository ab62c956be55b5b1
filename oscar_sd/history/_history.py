"""An identity's history: its finished runs, kept where only that identity can read them.

>>> history = History(DiskObjects(Path("~/.local/share/oscar-sd/history")))  # doctest: +SKIP
>>> record, dropped = await history.add(result)    # the PNGs and their record  # doctest: +SKIP
>>> [r.prompt for r in await history.runs()]       # newest first              # doctest: +SKIP
>>> paths = await history.fetch(record, cache)     # the PNGs, as files        # doctest: +SKIP
>>> await history.delete(record.run_id)                                         # doctest: +SKIP

Each run is one object, ``runs/<run id>/run.pack``: its record, then its PNGs
(``_record.py`` says how, and reads the older layout of a file an image).
The storage behind it is an :class:`Objects` (a folder, or the identity's
bucket on the cluster); every storage call runs in a worker thread of the
history's own, a few at once, so listing 100 runs is not 100 round trips
in a row. Records never change once written, so each is read once per
history object; the listing itself is read again each time :meth:`History.runs`
is asked (a page shows the history), so another browser's or another replica's
runs show up. Adding a run does not list: the budget counts the runs this
object knows (its last listing and what it added since), and the listing is read
again only once it is ``relist_after`` seconds old. A listing names the runs'
folders (one entry a run), not their files: every object of every run (700 at
the default 100 runs, each parsed with its date by minio-py) made a page's read
of the history cost more the fuller it was, and was 40% of the app's CPU with 50
logins of one account.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from .._models import GenerationResult
from ._budget import HistoryBudget
from ._objects import Objects
from ._record import (
    PACK,
    RECORD,
    RECORD_READ,
    RUNS,
    RunRecord,
    is_run_id,
    new_run_id,
    pack,
    record_of_pack,
    run_prefix,
)

log = logging.getLogger("oscar_sd.history")

#: Storage calls one history makes at once.
HISTORY_THREADS = 8
#: Seconds a listing stands for the budget when runs are added (others' runs count
#: from the next listing).
RELIST_AFTER = 60.0
#: Records read by any history object of this process, by run id (ids are unique: a
#: time and 64 random bits): every login of one account reads each record once, not
#: once per login. Records never change; a deleted run's is simply never asked for.
_READ_RECORDS: OrderedDict[str, RunRecord] = OrderedDict()
READ_RECORDS_KEPT = 10_000


class History:
    """The runs of one identity, in ``objects``, held to ``budget`` (oldest go first)."""

    def __init__(
        self, objects: Objects, budget: HistoryBudget | None = None, *,
        threads: int = HISTORY_THREADS, shared: bool = False,
        relist_after: float = RELIST_AFTER,
    ) -> None:
        self.objects = objects
        self.budget = budget or HistoryBudget()
        #: True when several people may share it (OSCAR's one basic-auth account).
        self.shared = shared
        self._limiter = anyio.CapacityLimiter(threads)
        self._records: dict[str, RunRecord] = {}
        self.relist_after = relist_after
        self._listed_at: float | None = None  # monotonic time of the last listing

    @property
    def description(self) -> str:
        return self.objects.description

    @property
    def place(self) -> str:
        """Which storage holds it: equal for every history object of one identity."""
        return self.objects.place

    async def _call(self, function: Any, *args: Any) -> Any:
        return await anyio.to_thread.run_sync(partial(function, *args), limiter=self._limiter)

    async def runs(self) -> list[RunRecord]:
        """Every finished run, newest first."""
        listed_at, listed_wall = time.monotonic(), time.time()
        # The runs' folders, not their files: a run whose record is not there yet (or
        # any more) has none to read, and is left out.
        ids = sorted(await self._call(self.objects.folders, RUNS), reverse=True)
        missing = [run_id for run_id in ids if run_id not in self._records and is_run_id(run_id)]
        if missing:
            async with anyio.create_task_group() as tasks:
                for run_id in missing:
                    tasks.start_soon(self._load, run_id)
        gone = set(self._records) - set(ids)
        for run_id in gone:  # deleted elsewhere (another browser, another replica)
            if self._records[run_id].created < listed_wall - 1:  # not one added meanwhile
                del self._records[run_id]
        self._listed_at = listed_at
        return [self._records[run_id] for run_id in ids if run_id in self._records]

    async def _known_runs(self) -> list[RunRecord]:
        """The runs this object knows, newest first, listed again once the last listing
        is ``relist_after`` seconds old."""
        if self._listed_at is None or time.monotonic() - self._listed_at >= self.relist_after:
            await self.runs()
        return sorted(self._records.values(), key=lambda r: r.run_id, reverse=True)

    async def _load(self, run_id: str) -> None:
        record = await self.record(run_id)
        if record is not None:
            self._records[run_id] = record

    async def record(self, run_id: str) -> RunRecord | None:
        """The record of ``run_id``, or None when there is no such finished run."""
        if not is_run_id(run_id):
            return None
        if run_id in self._records:
            return self._records[run_id]
        if run_id in _READ_RECORDS:
            return _READ_RECORDS[run_id]
        try:
            record = await self._call(_read_record, self.objects, run_id)
            _remember(record)
            return record
        except KeyError:
            return None
        except (ValueError, TypeError):
            log.warning("history: run %s has an unreadable record; skipped", run_id)
            return None

    async def add(self, result: GenerationResult) -> tuple[RunRecord, list[str]]:
        """Keep ``result``'s images; returns its record and the ids of the older runs
        that left to keep the budget."""
        run_id = new_run_id()
        images = await anyio.to_thread.run_sync(_read_all, result.images)
        record, whole = pack(RunRecord.of(result, run_id), images)
        await self._call(self.objects.put, run_prefix(run_id) + PACK, whole)
        self._records[run_id] = record
        _remember(record)  # the other logins of this identity need not read it
        oldest_first = list(reversed(await self._known_runs()))
        dropped = self.budget.over([(r.run_id, r.size) for r in oldest_first])
        for old in dropped:
            await self.delete(old)
        if dropped:
            log.info("history budget: %d older run(s) deleted", len(dropped))
        return record, dropped

    async def image(self, record: RunRecord, name: str) -> bytes:
        """One image of a run, as stored (the PNG with its parameters)."""
        if name not in record.images:
            raise KeyError(name)
        key, byte_range = record.where(name)
        if byte_range is None:
            return await self._call(self.objects.get, key)
        return await self._call(self.objects.get_range, key, *byte_range)

    async def fetch(
        self, record: RunRecord, folder: Path, names: tuple[str, ...] = ()
    ) -> list[Path]:
        """The run's images (or just ``names``) as files in ``folder`` (kept if there).

        Raises :class:`KeyError` when an image is no longer stored: the run was deleted
        meanwhile (another browser, or the budget of another login of the account)."""
        wanted = names or record.images
        paths = [folder / name for name in wanted]
        await anyio.to_thread.run_sync(partial(folder.mkdir, parents=True, exist_ok=True))
        gone: list[str] = []
        whole: dict[str, bytes] = {}
        if record.packed and len(wanted) > 1:  # one download of the pack, not one each
            try:
                whole = await self._call(_unpacked, self.objects, record)
            except KeyError:
                gone = list(wanted)

        async def one(name: str, path: Path) -> None:
            if not await anyio.to_thread.run_sync(path.is_file):
                try:
                    data = whole[name] if name in whole else await self.image(record, name)
                except KeyError:
                    gone.append(name)
                    return
                await anyio.to_thread.run_sync(_write, path, data)

        if not gone:
            async with anyio.create_task_group() as tasks:
                for name, path in zip(wanted, paths, strict=True):
                    tasks.start_soon(one, name, path)
        if gone:
            self._records.pop(record.run_id, None)
            raise KeyError(record.key(gone[0]))
        return paths

    async def delete(self, run_id: str) -> None:
        """Delete a run from the storage (all of its files)."""
        if not is_run_id(run_id):
            return
        known = self._records.pop(run_id, None)
        _READ_RECORDS.pop(run_id, None)
        prefix = run_prefix(run_id)
        if known is not None:  # its files are named in its record: no listing needed
            keys = known.keys
        else:
            keys = await self._call(self.objects.list, prefix)
        # The record first: a run half deleted is no longer listed.
        record = [key for key in keys if key.endswith("/" + RECORD)]
        if record:
            await self._call(self.objects.remove, record)
        rest = [key for key in keys if key not in record]
        if rest:
            await self._call(self.objects.remove, rest)


def _remember(record: RunRecord) -> None:
    _READ_RECORDS[record.run_id] = record
    while len(_READ_RECORDS) > READ_RECORDS_KEPT:
        _READ_RECORDS.popitem(last=False)


def _read_record(objects: Objects, run_id: str) -> RunRecord:
    """A run's record: from its pack's start, or (a run kept before the pack) its
    ``run.json``. KeyError when the run has neither."""
    key = run_prefix(run_id) + PACK
    try:
        start = objects.get_range(key, 0, RECORD_READ)
    except KeyError:
        return RunRecord.from_json(objects.get(run_prefix(run_id) + RECORD))
    return record_of_pack(start, partial(objects.get_range, key))


def _unpacked(objects: Objects, record: RunRecord) -> dict[str, bytes]:
    """Every image of a packed run, from one download of its pack."""
    whole = objects.get(record.key(PACK))
    start = record.images_at
    return {name: whole[start + offset:start + offset + length]
            for name, offset, length in record.packed}


def _read_all(paths: list[Path]) -> list[tuple[str, bytes]]:
    return [(path.name, path.read_bytes()) for path in paths]


def _write(path: Path, data: bytes) -> None:
    partial_path = path.with_name(path.name + ".partial")
    partial_path.write_bytes(data)
    partial_path.replace(path)
