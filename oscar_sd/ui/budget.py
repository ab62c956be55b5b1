"""How much disk the results may take: a total, and a share per login, oldest runs go first.

The app keeps every run's images on disk so that its history survives a
reload of the tab; on a Deployment the results live in a size-limited
``/tmp`` volume, and a full volume gets the pod evicted. :class:`ResultsBudget`
is the bookkeeping: it knows each run's folder, owner and size, in the order
they were made, and says which runs must go when one more is added. Deleting
them (and their history entries) is the caller's part (``Sessions.keep``).

>>> budget = ResultsBudget(total_bytes=100, per_session_bytes=60)
>>> budget.add(Run("a1", "alice", 40))
[]
>>> [run.run_id for run in budget.add(Run("a2", "alice", 40))]   # alice over 60: her oldest
['a1']
>>> budget.add(Run("b1", "bob", 50))
[]
>>> [run.run_id for run in budget.add(Run("b2", "bob", 20))]     # 110 in all: the oldest
['a2']
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MB = 1024 * 1024


@dataclass(frozen=True)
class Run:
    """One run's images on disk: its folder's name, whose they are, how many bytes."""

    run_id: str
    owner: str  # the session key
    size: int
    folder: Path = Path()


class ResultsBudget:
    """The runs on disk, oldest first, held to ``total_bytes`` and ``per_session_bytes``.

    The run just added always stays (a single run larger than a budget is
    still shown to the person who made it); everything older may go.
    """

    def __init__(self, total_bytes: int, per_session_bytes: int) -> None:
        if total_bytes <= 0 or per_session_bytes <= 0:
            raise ValueError("a results budget must be more than 0 bytes")
        self.total_bytes = total_bytes
        self.per_session_bytes = per_session_bytes
        self._runs: dict[str, Run] = {}  # insertion order: oldest first
        self._used: dict[str, int] = {}  # per owner
        self.used = 0

    def __len__(self) -> int:
        return len(self._runs)

    def get(self, run_id: str) -> Run | None:
        return self._runs.get(run_id)

    def used_by(self, owner: str) -> int:
        return self._used.get(owner, 0)

    def add(self, run: Run) -> list[Run]:
        """Count ``run`` in; returns the older runs that must leave the disk for it."""
        self._runs[run.run_id] = run
        self._used[run.owner] = self._used.get(run.owner, 0) + run.size
        self.used += run.size
        evicted: list[Run] = []
        if self._used[run.owner] > self.per_session_bytes:
            for old in [r for r in self._runs.values() if r.owner == run.owner]:
                if self._used[run.owner] <= self.per_session_bytes or old is run:
                    break
                evicted.append(self._drop(old))
        for old in list(self._runs.values()):
            if self.used <= self.total_bytes or old is run:
                break
            evicted.append(self._drop(old))
        return evicted

    def forget(self, run_id: str) -> None:
        """A run deleted by other means (its session closed)."""
        run = self._runs.get(run_id)
        if run is not None:
            self._drop(run)

    def forget_owner(self, owner: str) -> None:
        for run in [r for r in self._runs.values() if r.owner == owner]:
            self._drop(run)

    def _drop(self, run: Run) -> Run:
        del self._runs[run.run_id]
        self.used -= run.size
        left = self._used[run.owner] - run.size
        if left:
            self._used[run.owner] = left
        else:
            del self._used[run.owner]
        return run
