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
>>> [run.run_id for run in budget.add(Run("c1", "carol", 50))]  # 140 in all: the oldest
['a2']

A login also keeps at most ``per_session_runs`` runs: its history strip is
sent whole after every run, and each image in it costs Gradio a round of
path checks, so a strip without end would make every click dearer.
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
    """The runs on disk, oldest first, held to ``total_bytes``, ``per_session_bytes``
    and ``per_session_runs``.

    The run just added always stays (a single run larger than a budget is
    still shown to the person who made it); everything older may go.
    """

    def __init__(
        self, total_bytes: int, per_session_bytes: int, per_session_runs: int = 24
    ) -> None:
        if total_bytes <= 0 or per_session_bytes <= 0:
            raise ValueError("a results budget must be more than 0 bytes")
        if per_session_runs <= 0:
            raise ValueError("a login must be able to keep at least one run")
        self.total_bytes = total_bytes
        self.per_session_bytes = per_session_bytes
        self.per_session_runs = per_session_runs
        self._runs: dict[str, Run] = {}  # insertion order: oldest first
        self._used: dict[str, int] = {}  # bytes per owner
        self._count: dict[str, int] = {}  # runs per owner
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
        self._count[run.owner] = self._count.get(run.owner, 0) + 1
        self.used += run.size
        evicted: list[Run] = []

        def over_own_share() -> bool:
            return (self._used[run.owner] > self.per_session_bytes
                    or self._count[run.owner] > self.per_session_runs)

        if over_own_share():
            for old in [r for r in self._runs.values() if r.owner == run.owner]:
                if not over_own_share() or old is run:
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
        self._count[run.owner] -= 1
        if self._count[run.owner]:
            self._used[run.owner] -= run.size
        else:
            del self._used[run.owner], self._count[run.owner]
        return run
