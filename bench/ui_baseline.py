"""bench/ui.py's baseline: the app the issue holds the page's speed to, measured in the same run.

Issue 17 asks the page to keep stop 13's speed: p50 0.927 s at 50 users, as
measured on that day's machine by that commit's own ``bench/ui.py``. Machines
differ from day to day (the same commit measured 1.652 s here on 2026-12-07),
so the figure is only comparable within one run: this checks that commit out
in a temporary git worktree and runs its own bench (its app, its double, its
browser-like tabs) with the same users, rounds and concurrency, on the same
machine, right after ours.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: Stop 13's app (`b0ae285`): the commit that measured the 0.927 s the issue names.
BASELINE = "b0ae285"


@dataclass(frozen=True)
class BaselineRow:
    """One row of the baseline's own table."""

    users: int
    clicks: int
    p50: float
    p95: float
    slowest: float
    cpu_ms: tuple[float, float, float]  # per click: app, double, clients


def measure_baseline(commit: str, users: list[int], rounds: int,
                     concurrency: int) -> list[BaselineRow]:
    """The browser rows of ``commit``'s own bench/ui.py, run from a worktree of it."""
    with tempfile.TemporaryDirectory(prefix="oscar-sd-baseline-") as place:
        tree = Path(place) / "tree"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "--quiet",
                        str(tree), commit], check=True)
        try:
            done = subprocess.run(
                [sys.executable, "bench/ui.py", "--rounds", str(rounds),
                 "--users", *map(str, users), "--clients", "browser",
                 "--concurrency", str(concurrency)],
                cwd=tree, capture_output=True, text=True, check=True,
            )
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
                           check=False)
    return [row for line in done.stdout.splitlines() if (row := _row(line)) is not None]


def _row(line: str) -> BaselineRow | None:
    """A "browser <users> <clicks> <p50> <p95> <max> <app> <double> <clients>" line."""
    fields = line.split()
    if len(fields) != 9 or fields[0] != "browser":
        return None
    users, clicks = int(fields[1]), int(fields[2])
    p50, p95, slowest, app, double, clients = map(float, fields[3:])
    return BaselineRow(users, clicks, p50, p95, slowest, (app, double, clients))
