"""The words the page shows for each stage, and the level that makes Gradio show them."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from oscar_sd import Progress, Stage
from oscar_sd.ui.progress import StageDisplay, stage_text


def test_each_stage_in_words() -> None:
    assert stage_text(Progress(Stage.UPLOADED, "Prompt uploaded")) == "Sending"
    assert stage_text(Progress(Stage.WAITING, "Waiting for the cluster")) == "Waiting for a GPU"
    assert stage_text(Progress(Stage.RUNNING, "running"), running_for=12.2) == (
        "Running on the GPU (12 s)"
    )
    assert stage_text(Progress(Stage.DOWNLOADING, "Downloading the images")) == "Downloading"
    queued = Progress(Stage.QUEUED, "Waiting: 2 request(s) ahead", queue_position=2)
    # The local line: this computer's turn, never "a GPU" (a laptop may have none).
    assert stage_text(queued) == "In line · 2 ahead of you"
    step = Progress(Stage.GENERATING, "Step 3 of 20", step=3, total_steps=20)
    assert stage_text(step) == "Generating · step 3 / 20"
    assert stage_text(step, left=7.6) == "Generating · step 3 / 20 · about 8 s left"
    # A warm service's steps come while the request runs on the cluster's GPU.
    warm = Progress(Stage.RUNNING, "Running on the GPU", step=3, total_steps=20)
    assert stage_text(warm) == "Running on the GPU · step 3 / 20"


def test_a_problem_while_waiting_is_said_as_the_backend_says_it() -> None:
    outage = Progress(Stage.WAITING, "Cannot reach the cluster's storage, retrying (12 s)")
    assert stage_text(outage) == outage.message


def test_every_report_carries_a_level_so_that_gradio_shows_its_words() -> None:
    shown: list[tuple[Any, str, str]] = []
    display = StageDisplay(lambda level, desc, unit: shown.append((level, desc, unit)))
    display(Progress(Stage.WAITING, "Waiting for the cluster"))
    display(Progress(Stage.GENERATING, "Step 1 of 4", step=1, total_steps=4))
    assert shown == [
        ((1, 4), "Sending", "stages"),
        ((2, 4), "Waiting for a GPU", "stages"),
        ((1, 4), "Generating · step 1 / 4", "steps"),
    ]


def test_the_steps_pace_gives_the_time_left(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [100.0]
    monkeypatch.setattr("oscar_sd.ui.progress.time.monotonic", lambda: clock[0])
    shown: list[str] = []
    display = StageDisplay(lambda level, desc, unit: shown.append(desc))
    display(Progress(Stage.GENERATING, "Step 1 of 25", step=1, total_steps=25))
    clock[0] += 5.5  # 11 steps in 5.5 s: half a second a step, 13 to go
    display(Progress(Stage.GENERATING, "Step 12 of 25", step=12, total_steps=25))
    assert shown[1:] == ["Generating · step 1 / 25", "Generating · step 12 / 25 · about 6 s left"]


@pytest.mark.anyio
async def test_the_seconds_on_the_gpu_go_on_counting() -> None:
    shown: list[str] = []
    counted_twice = anyio.Event()

    def show(level: Any, desc: str, unit: str) -> None:
        shown.append(desc)
        if len(shown) == 4:  # the start, the first report, then one each second
            counted_twice.set()

    display = StageDisplay(show)
    display(Progress(Stage.RUNNING, "running"))
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(display.keep_counting)
            await counted_twice.wait()
            tasks.cancel_scope.cancel()
    assert shown[1] == "Running on the GPU (0 s)"
    assert shown[3] == "Running on the GPU (2 s)"
