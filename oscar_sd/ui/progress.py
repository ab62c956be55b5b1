"""What the page writes while a request waits: the stage, in words, beside the timer.

Gradio shows a progress ``desc`` only together with a progress level (its
status tracker renders the text in the progress bar's row, which exists only
when some level is known; ``progress(None, desc=...)`` shows the timer alone:
"5.0s"). So each report goes out with a level: the denoising steps when the
backend reports them, else the stage's place among the stages ("2/4 stages"
beside the timer) and its name as the description.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import anyio

from .._models import Progress, Stage

#: The stages a request passes through on its way, for "N/4 stages".
ORDER = (Stage.UPLOADED, Stage.WAITING, Stage.RUNNING, Stage.DOWNLOADING)

#: How the page names each stage (the backend's own message is shown for the rest).
LABELS = {
    Stage.UPLOADED: "Sending",
    Stage.WAITING: "Waiting for a GPU",
    Stage.QUOTA: "Waiting for the cluster's quota",
    Stage.RUNNING: "Running on the GPU",
    Stage.DOWNLOADING: "Downloading",
    Stage.DONE: "Done",
}

#: Where the page is before the backend says anything.
SENDING = Progress(Stage.UPLOADED, "Sending")

#: (level, description, unit) as gr.Progress takes them.
Shown = tuple[tuple[int, int], str, str]


#: How the page names the path that runs a request, where a service has two (spill-over).
ROUTES = {"warm": "warm replica", "per-job": "per-job GPU job"}


def stage_text(
    report: Progress, running_for: float | None = None, left: float | None = None
) -> str:
    """The words for ``report``: its stage, its place in line, how long it has run,
    (``left``, from the steps' pace) about how long it still needs, and which path runs it."""
    text = _stage_words(report, running_for, left)
    route = ROUTES.get(report.route or "")
    return f"{text} · {route}" if route and route not in text else text


def _stage_words(report: Progress, running_for: float | None, left: float | None) -> str:
    stage = report.stage
    if stage is Stage.QUEUED:
        # The local backend's line: this computer's turn, not a GPU's (there may be none).
        ahead = report.queue_position
        if not ahead:
            return "Starting"
        return f"In line · {ahead} ahead of you"
    if report.step is not None and report.total_steps:
        doing = "Generating" if stage is Stage.GENERATING else LABELS.get(stage, "Generating")
        text = f"{doing} · step {report.step} / {report.total_steps}"
        if left is not None:
            text += f" · about {max(1, round(left))} s left"
        return text
    if stage is Stage.GENERATING:
        return report.message
    if stage is Stage.WAITING and not report.message.startswith("Waiting"):
        # A problem while waiting ("Cannot reach the cluster's storage, retrying (12 s)").
        return report.message
    if stage in (Stage.WAITING, Stage.QUOTA) and report.message.startswith(
            LABELS[stage] + " ("):
        return report.message  # "Waiting for a GPU (3 jobs queued)", "(1 job suspended)"
    text = LABELS.get(stage, report.message)
    if stage is Stage.WAITING and report.queue_position:
        text += f" · {report.queue_position} ahead of you"
    if stage is Stage.RUNNING and running_for is not None:
        text += f" ({running_for:.0f} s)"
    return text


class StageDisplay:
    """Turns a backend's progress reports into gr.Progress calls, kept current each second.

    ``show`` is a ``gr.Progress`` (or anything called like it). While the job
    runs on the GPU the seconds beside "Running on the GPU" go on counting:
    :meth:`keep_counting` shows the stage again every second.
    """

    def __init__(self, show: Callable[..., object]) -> None:
        self._show = show
        self._last = SENDING
        self._running_since: float | None = None
        #: (step, when) of the first step report of this run of steps, for the pace.
        self._first_step: tuple[int, float] | None = None
        self(SENDING)

    def __call__(self, report: Progress) -> None:
        now = time.monotonic()
        if report.stage is Stage.RUNNING and self._last.stage is not Stage.RUNNING:
            self._running_since = now
        if report.step is None or not report.total_steps:
            self._first_step = None
        elif (self._first_step is None or report.step < self._first_step[0]
              or report.total_steps != self._last.total_steps):
            self._first_step = (report.step, now)
        self._last = report
        level, text, unit = self.shown()
        self._show(level, desc=text, unit=unit)

    def shown(self) -> Shown:
        """What is on the page now: level, description and unit."""
        report = self._last
        running_for = (
            time.monotonic() - self._running_since if self._running_since is not None else None
        )
        text = stage_text(report, running_for, self._seconds_left())
        if report.step is not None and report.total_steps:
            return (report.step, report.total_steps), text, "steps"
        if report.stage is Stage.DONE:
            place = len(ORDER)
        else:  # QUEUED (the local line) counts as the first stage, QUOTA as WAITING
            stage = Stage.WAITING if report.stage is Stage.QUOTA else report.stage
            place = ORDER.index(stage) + 1 if stage in ORDER else 1
        return (place, len(ORDER)), text, "stages"

    def _seconds_left(self) -> float | None:
        """The steps still to go at the pace of those done so far (None until two reports)."""
        report, first = self._last, self._first_step
        if first is None or report.step is None or not report.total_steps:
            return None
        done = report.step - first[0]
        if done <= 0:
            return None
        pace = (time.monotonic() - first[1]) / done
        return pace * (report.total_steps - report.step)

    async def keep_counting(self) -> None:
        """Every second, while the job runs: the same stage, with its seconds counted."""
        while True:
            await anyio.sleep(1)
            if self._last.stage is Stage.RUNNING:
                self(self._last)
