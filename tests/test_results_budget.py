"""The results folder's disk budget: per login and in all, the oldest runs go first,
and a run that leaves the disk leaves its login's history too."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from oscar_sd import GenerationRequest, GenerationResult, Settings
from oscar_sd.ui.budget import MB, ResultsBudget, Run
from oscar_sd.ui.sessions import Sessions, new_session_key


def test_a_login_over_its_share_loses_its_own_oldest_runs_first() -> None:
    budget = ResultsBudget(total_bytes=1000, per_session_bytes=300)
    assert budget.add(Run("a1", "alice", 100)) == []
    assert budget.add(Run("b1", "bob", 100)) == []
    assert budget.add(Run("a2", "alice", 100)) == []
    assert budget.add(Run("a3", "alice", 100)) == []
    evicted = budget.add(Run("a4", "alice", 150))
    # alice: 450 > 300, so her oldest go until she is within it; bob keeps his.
    assert [run.run_id for run in evicted] == ["a1", "a2"]
    assert budget.used_by("alice") == 250 and budget.used_by("bob") == 100


def test_over_the_total_the_oldest_runs_of_anyone_go() -> None:
    budget = ResultsBudget(total_bytes=300, per_session_bytes=300)
    budget.add(Run("a1", "alice", 100))
    budget.add(Run("b1", "bob", 100))
    budget.add(Run("c1", "carol", 100))
    assert [run.run_id for run in budget.add(Run("d1", "dave", 150))] == ["a1", "b1"]
    assert budget.used == 250


def test_the_run_just_made_stays_even_when_larger_than_a_budget() -> None:
    budget = ResultsBudget(total_bytes=100, per_session_bytes=50)
    budget.add(Run("a1", "alice", 40))
    assert [run.run_id for run in budget.add(Run("a2", "alice", 500))] == ["a1"]
    assert budget.get("a2") is not None


def test_a_login_keeps_at_most_its_number_of_runs() -> None:
    # Its whole history strip goes to the page after every run: it must not grow without end.
    budget = ResultsBudget(total_bytes=10_000, per_session_bytes=10_000, per_session_runs=3)
    for index in range(1, 4):
        assert budget.add(Run(f"a{index}", "alice", 10)) == []
    assert budget.add(Run("b1", "bob", 10)) == []
    assert [run.run_id for run in budget.add(Run("a4", "alice", 10))] == ["a1"]
    assert [run.run_id for run in budget.add(Run("a5", "alice", 0))] == ["a2"]
    assert budget.used_by("alice") == 20 and budget.get("b1") is not None
    for run_id in ("a3", "a4", "a5"):
        budget.forget(run_id)
    assert budget.used_by("alice") == 0 and len(budget) == 1
    assert budget.add(Run("a6", "alice", 10)) == []  # her count starts again from nothing


def test_the_budgets_are_settings_in_mb() -> None:
    settings = Settings(results_budget_mb=300, session_budget_mb=40, session_runs=12)
    assert (settings.results_budget_mb, settings.session_budget_mb) == (300, 40)
    assert settings.session_runs == 12 and Settings().session_runs == 24
    with pytest.raises(ValueError, match="greater than 0"):
        Settings(results_budget_mb=0)
    with pytest.raises(ValueError, match="greater than 0"):
        Settings(session_runs=0)


def fake_run(folder: Path, prompt: str, size: int) -> GenerationResult:
    """A finished run in ``folder``: six files of ``size`` bytes each."""
    folder.mkdir(parents=True)
    images = []
    for index in range(1, 7):
        image = folder / f"{index}.png"
        image.write_bytes(b"\0" * size)
        images.append(image)
    return GenerationResult(
        images=images,
        request=GenerationRequest(prompt=prompt, seed=index),
        job_id=folder.name,
        directory=folder,
    )


@pytest.mark.anyio
async def test_keeping_runs_past_the_budget_deletes_the_oldest_and_their_history(
    tmp_path: Path,
) -> None:
    # 1 MB per login: three runs of 6 x 100 KB do not fit, two do.
    sessions = Sessions(tmp_path / "results", 3600, ResultsBudget(10 * MB, 1 * MB))
    with anyio.fail_after(20):
        alice = await sessions.open(new_session_key(), None, owns_backend=False)
        bob = await sessions.open(new_session_key(), None, owns_backend=False)
        kept = []
        for number in range(3):
            run = fake_run(alice.directory / f"run{number}", f"alice {number}", 80_000)
            kept.append(await sessions.keep(alice, run))
        await sessions.keep(bob, fake_run(bob.directory / "bob0", "bob 0", 100_000))

        assert [entry.prompt for entry in alice.history] == ["alice 2", "alice 1"]
        assert not (alice.directory / "run0").exists(), "the oldest run left the disk"
        assert (alice.directory / "run1").exists() and (alice.directory / "run2").exists()
        assert sessions.run_of(kept[0].run) is None
        assert sessions.run_of(kept[2].run) == (alice, kept[2])
        assert [entry.prompt for entry in bob.history] == ["bob 0"]

        # A run made elsewhere (the shared local backend) moves into the login's folder.
        elsewhere = fake_run(tmp_path / "incoming" / "x", "alice 3", 10)
        entry = await sessions.keep(alice, elsewhere)
        assert Path(entry.images[0]).parent.parent == alice.directory
        assert not elsewhere.directory.exists()

        await sessions.close(alice.key, "logout")
        assert sessions.budget.used_by(alice.key) == 0
        assert sessions.run_of(kept[2].run) is None


@pytest.mark.anyio
async def test_the_total_budget_takes_from_the_oldest_login(tmp_path: Path) -> None:
    sessions = Sessions(tmp_path / "results", 3600, ResultsBudget(1 * MB, 1 * MB))
    with anyio.fail_after(20):
        alice = await sessions.open(new_session_key(), None, owns_backend=False)
        bob = await sessions.open(new_session_key(), None, owns_backend=False)
        await sessions.keep(alice, fake_run(alice.directory / "a0", "alice 0", 60_000))
        await sessions.keep(bob, fake_run(bob.directory / "b0", "bob 0", 60_000))
        await sessions.keep(bob, fake_run(bob.directory / "b1", "bob 1", 60_000))
        assert alice.history == [] and not (alice.directory / "a0").exists()
        assert [entry.prompt for entry in bob.history] == ["bob 1", "bob 0"]
        assert sessions.budget.used <= 1 * MB
