"""How much history an identity keeps: at most so many runs and so many MB, oldest go first.

>>> budget = HistoryBudget(max_runs=2, max_bytes=100)
>>> [r for r in budget.over([("a", 10), ("b", 10), ("c", 10)])]   # oldest first in, ids out
['a']
>>> budget.over([("a", 60), ("b", 60)])
['a']
>>> budget.over([("a", 500)])    # the newest run always stays
[]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

MB = 1024 * 1024


@dataclass(frozen=True)
class HistoryBudget:
    """Per-identity limits of a history (settings ``OSCAR_SD_HISTORY_RUNS`` and ``_MB``)."""

    max_runs: int = 200
    max_bytes: int = 500 * MB

    def __post_init__(self) -> None:
        if self.max_runs < 1 or self.max_bytes < 1:
            raise ValueError("a history must be able to keep at least one run")

    def over(self, runs: Sequence[tuple[str, int]]) -> list[str]:
        """The ids that must go, of ``runs`` given oldest first as (id, bytes)."""
        total = sum(size for _, size in runs)
        count = len(runs)
        dropped: list[str] = []
        for run_id, size in runs[:-1]:  # the newest stays, whatever its size
            if count <= self.max_runs and total <= self.max_bytes:
                break
            dropped.append(run_id)
            count -= 1
            total -= size
        return dropped
