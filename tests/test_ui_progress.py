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
    assert stage_text(queued) == "Waiting for a GPU · 2 ahead of you"
    step = Progress(Stage.GENERATING, "Step 3 of 20", step=3, total_steps=20)
    assert stage_text(step) == "Generating: step 3 of 20"


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
        ((1, 4), "Generating: step 1 of 4", "steps"),
    ]


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
