"""LocalSD, the embedded backend: the service worker in-process, one request at a time."""

from __future__ import annotations

import io
import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import numpy as np
import pytest
from PIL import Image

from oscar_sd import (
    Backend,
    GenerationRequest,
    GenerationResult,
    JobFailedError,
    LocalSD,
    OscarSDError,
    Progress,
    Stage,
)
from oscar_sd import _local as local_module
from oscar_sd.service import generate_images, load_pipeline
from tests.helpers import pixels, small_request


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module", autouse=True)
def tiny_model() -> None:
    """Build the tiny pipeline once (the service's cache keeps it for every LocalSD)."""
    load_pipeline("tiny", "cpu")


@pytest.fixture
def results(tmp_path: Path) -> Path:
    return tmp_path / "results"


class Recorder:
    """Collects progress reports and lets a test wait for a particular one."""

    def __init__(self) -> None:
        self.reports: list[Progress] = []
        self._waiters: list[tuple[Callable[[Progress], bool], anyio.Event]] = []

    def __call__(self, progress: Progress) -> None:
        self.reports.append(progress)
        for wanted, event in self._waiters:
            if wanted(progress):
                event.set()

    async def wait_for(self, wanted: Callable[[Progress], bool]) -> None:
        if any(wanted(progress) for progress in self.reports):
            return
        event = anyio.Event()
        self._waiters.append((wanted, event))
        with anyio.fail_after(60):
            await event.wait()

    def queue_positions(self) -> list[int | None]:
        return [p.queue_position for p in self.reports if p.stage is Stage.QUEUED]


def is_step(number: int) -> Callable[[Progress], bool]:
    return lambda p: p.stage is Stage.GENERATING and p.step == number


@pytest.mark.anyio
async def test_generate_returns_numbered_pngs_with_metadata(results: Path) -> None:
    request = small_request(seed=77)
    async with LocalSD(model="tiny", results_dir=results, device="cpu") as sd:
        assert isinstance(sd, Backend)
        result = await sd.generate(request)

    assert len(result.job_id) == 32 and int(result.job_id, 16) >= 0
    assert result.directory == results / result.job_id
    assert result.images == [result.directory / f"{i}.png" for i in (1, 2, 3)]
    assert result.request.seed == 77 and result.request.steps == 2
    assert result.model == "tiny"
    direct = generate_images(request, model="tiny", device="cpu")
    for path, image in zip(result.images, direct, strict=True):
        png = path.read_bytes()
        assert png == image.png
        with Image.open(io.BytesIO(png)) as opened:
            assert json.loads(opened.text["oscar-sd"])["request"]["seed"] == 77
            assert "Model: tiny" in opened.text["parameters"]


@pytest.mark.anyio
async def test_random_seed_is_reported_in_the_result(results: Path) -> None:
    async with LocalSD(model="tiny", results_dir=results, device="cpu") as sd:
        result = await sd.generate(small_request(seed=None, num_images=1))
    assert result.request.seed is not None
    again = generate_images(result.request, model="tiny", device="cpu")
    assert result.images[0].read_bytes() == again[0].png


@pytest.mark.anyio
async def test_progress_goes_queued_generating_each_step_done(results: Path) -> None:
    recorder = Recorder()
    async with LocalSD(model="tiny", results_dir=results, device="cpu") as sd:
        await sd.generate(small_request(steps=3, num_images=1), recorder)

    stages = [p.stage for p in recorder.reports]
    assert stages[0] is Stage.QUEUED and recorder.reports[0].queue_position == 0
    assert stages[-1] is Stage.DONE
    steps = [(p.step, p.total_steps) for p in recorder.reports if p.step]
    assert steps == [(1, 3), (2, 3), (3, 3)]
    elapsed = [p.elapsed for p in recorder.reports]
    assert elapsed == sorted(elapsed)


@pytest.mark.anyio
async def test_concurrent_requests_wait_in_line_and_each_gets_its_own_images(
    results: Path,
) -> None:
    requests = [
        small_request(seed=1, prompt="a red fox"),
        small_request(seed=2, prompt="a red fox"),
        small_request(seed=1, prompt="a blue whale"),
    ]
    recorders = [Recorder() for _ in requests]
    outcomes: list[GenerationResult | None] = [None] * len(requests)

    async with LocalSD(model="tiny", results_dir=results, device="cpu") as sd:

        async def run(i: int) -> None:
            outcomes[i] = await sd.generate(requests[i], recorders[i])

        async with anyio.create_task_group() as group:
            for i in range(len(requests)):
                group.start_soon(run, i)
                # Join the line in this order: wait until request i has its place.
                await recorders[i].wait_for(lambda p: p.stage is Stage.QUEUED)

    assert [r.queue_positions() for r in recorders] == [[0], [1, 0], [2, 1, 0]]
    finished = [outcome for outcome in outcomes if outcome is not None]
    assert len(finished) == 3
    assert len({outcome.directory for outcome in finished}) == 3
    firsts = [pixels(outcome.images[0].read_bytes()) for outcome in finished]
    assert np.abs(firsts[0] - firsts[1]).mean() > 1.0  # another seed
    # Random weights barely listen to the prompt, but they do hear it.
    assert np.abs(firsts[0] - firsts[2]).max() > 0  # another prompt
    for request, outcome in zip(requests, finished, strict=True):
        direct = generate_images(request, model="tiny", device="cpu")
        assert [p.read_bytes() for p in outcome.images] == [image.png for image in direct]


@pytest.mark.anyio
async def test_cancelling_a_running_request_stops_it_and_removes_its_folder(
    results: Path,
) -> None:
    recorder = Recorder()
    async with LocalSD(model="tiny", results_dir=results, device="cpu") as sd:
        async with anyio.create_task_group() as group:
            group.start_soon(sd.generate, small_request(steps=150, num_images=1), recorder)
            await recorder.wait_for(is_step(2))
            group.cancel_scope.cancel()

        # The next request waits only for the cancelled one's current step, then runs.
        after = Recorder()
        with anyio.fail_after(60):
            result = await sd.generate(small_request(num_images=1), after)
        assert after.queue_positions() in ([0], [1, 0])
        assert result.images[0].is_file()
        # The cancelled one stopped at the next step or so, not after all 150.
        last_step = max(p.step or 0 for p in recorder.reports)
        assert last_step < 20
        assert not any(p.stage is Stage.DONE for p in recorder.reports)
        assert [path.parent for path in result.images] == [result.directory]
        assert list(results.iterdir()) == [result.directory]


@pytest.mark.anyio
async def test_a_cancelled_request_frees_its_caller_before_the_step_ends(
    results: Path,
) -> None:
    """Gradio's Cancel waits for the handler: a slow step must not hold up the page."""
    recorder = Recorder()
    slow = small_request(steps=150, num_images=4, width=512, height=512)
    async with LocalSD(model="tiny", results_dir=results, device="cpu") as sd:
        async with anyio.create_task_group() as group:
            group.start_soon(sd.generate, slow, recorder)
            with anyio.fail_after(120):
                await recorder.wait_for(is_step(2))
            step_began = time.monotonic()
            group.cancel_scope.cancel()
        freed_after = time.monotonic() - step_began
        with anyio.fail_after(120):
            await sd.generate(small_request(num_images=1), Recorder())
        reports = [p for p in recorder.reports if p.step]
        step_seconds = (reports[-1].elapsed - reports[0].elapsed) / max(1, len(reports) - 1)
        assert freed_after < min(0.5, step_seconds / 2), (freed_after, step_seconds)


@pytest.mark.anyio
async def test_cancelling_a_queued_request_takes_it_out_of_the_line(results: Path) -> None:
    running, queued, later = Recorder(), Recorder(), Recorder()
    finished: list[GenerationResult] = []

    async def generate(sd: LocalSD, request: GenerationRequest, recorder: Recorder) -> None:
        finished.append(await sd.generate(request, recorder))

    async with LocalSD(model="tiny", results_dir=results, device="cpu") as sd:
        async with anyio.create_task_group() as group:
            group.start_soon(generate, sd, small_request(steps=40, num_images=1), running)
            await running.wait_for(is_step(1))
            with anyio.CancelScope() as waiting_scope:
                async with anyio.create_task_group() as inner:
                    inner.start_soon(generate, sd, small_request(num_images=1), queued)
                    await queued.wait_for(lambda p: p.queue_position == 1)
                    waiting_scope.cancel()
            # The cancelled request left: a newcomer is next in line, not second.
            group.start_soon(generate, sd, small_request(num_images=1), later)

    assert queued.queue_positions() == [1]
    assert not any(p.stage is Stage.GENERATING for p in queued.reports)
    assert later.queue_positions() == [1, 0]
    assert len(finished) == 2
    assert sorted(p.name for p in results.iterdir()) == sorted(r.job_id for r in finished)


@pytest.mark.anyio
async def test_aclose_cancels_running_requests(results: Path) -> None:
    recorder = Recorder()
    sd = LocalSD(model="tiny", results_dir=results, device="cpu")
    failures: list[BaseException] = []

    async def run() -> None:
        try:
            await sd.generate(small_request(steps=150, num_images=1), recorder)
        except OscarSDError as exc:
            failures.append(exc)

    async with anyio.create_task_group() as group:
        group.start_soon(run)
        await recorder.wait_for(is_step(1))
        await sd.aclose()

    assert len(failures) == 1 and "closed" in str(failures[0])
    assert not results.exists() or list(results.iterdir()) == []
    with pytest.raises(OscarSDError, match="closed"):
        await sd.generate(small_request())


@pytest.mark.anyio
async def test_a_model_that_cannot_load_fails_the_request(results: Path) -> None:
    async with LocalSD(model="/nonexistent", results_dir=results, device="cpu") as sd:
        with pytest.raises(JobFailedError) as caught:
            await sd.generate(small_request())
    assert caught.value.error_type == "ModelLoadError"
    assert "OSCAR_SD_MODEL" in str(caught.value)


@pytest.mark.anyio
async def test_description_names_the_model(results: Path) -> None:
    tiny = LocalSD(model="tiny", results_dir=results)
    assert tiny.model == "tiny"
    assert tiny.description.startswith(
        "this computer (in-process), model tiny (random weights: makes noise, not pictures)."
    )
    assert LocalSD(model="org/some-model").description.endswith("model org/some-model")


@pytest.mark.anyio
async def test_auto_falls_back_to_tiny_offline(
    results: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(local_module, "TURBO_MODEL", "oscar-sd-tests/not-cached-anywhere")
    sd = LocalSD(results_dir=results, device="cpu")
    assert sd.model == "auto" and "chosen on first use" in sd.description
    with caplog.at_level(logging.WARNING, logger="oscar_sd.local"):
        await sd.load()
    assert sd.model == "tiny"
    assert "noise, not pictures" in sd.description
    # Said with what to do about it, on the page and in the log.
    for said in (sd.description, caplog.text):
        assert "For real pictures" in said and "OSCAR_SD_MODEL" in said, said


@pytest.mark.anyio
async def test_auto_gives_a_silent_hub_a_few_seconds_only(
    results: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub

    release = threading.Event()

    def hanging_model_info(self: object, repo_id: str, **kwargs: object) -> None:
        release.wait(30)  # a hub that never answers (until the test ends)

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(local_module, "TURBO_MODEL", "oscar-sd-tests/not-cached-anywhere")
    monkeypatch.setattr(local_module, "HUB_CHECK_SECONDS", 0.2)
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", hanging_model_info)
    try:
        with anyio.fail_after(5):
            await LocalSD(results_dir=results, device="cpu").load()
    finally:
        release.set()


SCRIPT_ON_A_TERMINAL = """
import anyio, oscar_sd
from oscar_sd import GenerationRequest, LocalSD

print(sorted(dir(oscar_sd)) == sorted(oscar_sd.__all__))

async def main():
    async with LocalSD(model="tiny") as sd:
        request = GenerationRequest(prompt="a fox", width=64, height=64, num_images=1)
        (await sd.generate(request)).cleanup()

anyio.run(main)
"""


def test_a_fresh_process_sees_only_the_api_and_no_torchvision_advice() -> None:
    """``dir(oscar_sd)`` lists the public API only, and LocalSD's first model load
    prints none of transformers' "requires torchvision" advice (a fresh process:
    transformers gives it once per process)."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", SCRIPT_ON_A_TERMINAL],
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True"
    assert "torchvision" not in done.stderr, done.stderr
    import oscar_sd

    for helper in ("Any", "TYPE_CHECKING", "annotations", "importlib"):
        assert helper not in dir(oscar_sd)


def test_a_cancel_stops_the_computation_within_a_step_not_at_its_end() -> None:
    """8 images are two micro-batches a step: the check between them stops the call."""

    class Cancelled(Exception):
        pass

    checks: list[int] = []

    def interrupt() -> None:
        checks.append(1)
        if len(checks) == 3:  # before the lock, first micro-batch, then the second
            raise Cancelled

    steps: list[int] = []
    with pytest.raises(Cancelled):
        generate_images(small_request(num_images=8, steps=5, seed=1), model="tiny",
                        device="cpu", on_step=lambda step, total: steps.append(step),
                        interrupt=interrupt)
    assert steps == []  # stopped inside the first step
