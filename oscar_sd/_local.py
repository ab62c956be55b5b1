"""The embedded local backend: the service worker in-process, the model kept warm.

Without a cluster, the app (and any Python program) generates on this computer
with the very code the OSCAR job runs (:mod:`oscar_sd.service`).

>>> import anyio
>>> from oscar_sd import GenerationRequest, LocalSD
>>> async def main():
...     async with LocalSD(model="tiny") as sd:
...         result = await sd.generate(GenerationRequest(prompt="a red fox", width=64, height=64))
...         print(result.images)        # [.../1.png, ..., .../6.png]
>>> anyio.run(main)                       # doctest: +SKIP

One generation runs at a time (a GPU, or the CPU, is best used by one batch);
the others wait in line and hear their place through ``on_progress``
(``Stage.QUEUED`` with ``queue_position``: how many requests are ahead). While
generating, each denoising step is reported (``Stage.GENERATING`` with ``step``
and ``total_steps``). Cancelling the awaiting task stops a running generation
at its next step, or takes a waiting request out of the line, and removes the
request's folder.

``model``: ``"tiny"``, a hub id, a folder, or ``"auto"``: ``stabilityai/sd-turbo``
when it can be had (in the local Hugging Face cache, or the hub answers within
a few seconds), else ``tiny``; the log says which and why. torch and diffusers
are imported on first use, so importing :mod:`oscar_sd` stays light.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
import uuid
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread

from ._errors import JobFailedError, OscarSDError
from ._models import (
    GenerationRequest,
    GenerationResult,
    ProgressCallback,
    ProgressReporter,
    Stage,
    Timings,
    count_of,
)

if TYPE_CHECKING:
    from .service import GeneratedImage

logger = logging.getLogger("oscar_sd.local")

AUTO_MODEL = "auto"
TURBO_MODEL = "stabilityai/sd-turbo"  # the service's default model
TINY_MODEL = "tiny"
#: How a person gets real pictures where "auto" found no model (page, log and README).
REAL_PICTURES = (
    f"For real pictures, start the app where it can download {TURBO_MODEL} once (a few "
    "GB; then it is cached), or set OSCAR_SD_MODEL to a model folder on this computer."
)
#: How long "auto" waits for the Hugging Face hub before settling for "tiny".
HUB_CHECK_SECONDS = 3.0


class _NoTorchvisionAdvice(logging.Filter):
    """Drops transformers' "`CLIPImageProcessor` requires torchvision (not installed);
    falling back to ..." advice: the Stable Diffusion pipelines' feature extractor
    runs the same on its PIL fallback, so on a person's terminal it is only noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "requires torchvision" not in str(record.msg)


def _quiet_transformers_advice() -> None:
    """Install the filter on the transformers logger that gives that advice (once)."""
    advising = logging.getLogger("transformers.utils.import_utils")
    if not any(isinstance(kept, _NoTorchvisionAdvice) for kept in advising.filters):
        advising.addFilter(_NoTorchvisionAdvice())


class _Ticket:
    """A request's place in the line; ``moved`` fires when the line changes."""

    def __init__(self) -> None:
        self.moved = anyio.Event()


class LocalSD:
    """Generate on this computer, one request at a time, the pipeline kept loaded.

    Implements :class:`oscar_sd.Backend`.
    """

    def __init__(
        self,
        model: str = AUTO_MODEL,
        results_dir: str | Path | None = None,
        *,
        device: str | None = None,
    ) -> None:
        _quiet_transformers_advice()
        self._requested_model = model
        # None until "auto" is resolved on first use.
        self._model: str | None = None if model == AUTO_MODEL else model
        self._device = device
        self._results_root = Path(results_dir) if results_dir else None
        self._label: str | None = None
        self._line: list[_Ticket] = []
        self._load_lock = anyio.Lock()
        self._running: set[anyio.CancelScope] = set()
        self._all_finished = anyio.Event()
        self._closed = False

    @property
    def model(self) -> str:
        """The model that runs ("auto" until it is chosen on first use)."""
        return self._model or self._requested_model

    @property
    def description(self) -> str:
        """Where and with what the images are made, for the page."""
        where = "this computer (in-process)"
        if self._model is None:
            return f"{where}, model chosen on first use ({TURBO_MODEL} if available, else tiny)"
        if self._model == TINY_MODEL:
            return f"{where}, model tiny (random weights: makes noise, not pictures). " + (
                REAL_PICTURES
            )
        return f"{where}, model {self._label or self._model}"

    async def __aenter__(self) -> LocalSD:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def load(self) -> None:
        """Choose the model (for "auto") and load it in a worker thread, once.

        Optional: :meth:`generate` loads on first use; call this to warm up early.
        """
        from .service import ModelLoadError, load_pipeline

        async with self._load_lock:
            if self._model is None:
                self._model = await _choose_auto_model()
            try:
                loaded = await anyio.to_thread.run_sync(load_pipeline, self._model, self._device)
            except ModelLoadError as exc:
                if self._requested_model != AUTO_MODEL or self._model == TINY_MODEL:
                    raise
                logger.warning("Using the tiny model: %s", exc)
                self._model = TINY_MODEL
                loaded = await anyio.to_thread.run_sync(load_pipeline, self._model, self._device)
            self._label = loaded.profile.label

    async def generate(
        self, request: GenerationRequest, on_progress: ProgressCallback | None = None
    ) -> GenerationResult:
        """Make the images of ``request``; see the module docstring for progress and cancelling.

        Raises :class:`~oscar_sd.InvalidRequestError` for a request the model
        cannot run and :class:`~oscar_sd.JobFailedError` when the model cannot be
        loaded or generation fails (``error_type`` as in the service's error object).
        """
        if self._closed:
            raise OscarSDError("This local backend is closed; create a new LocalSD.")
        job_id = uuid.uuid4().hex
        report = _Reporter(on_progress)
        with anyio.CancelScope() as scope:
            self._running.add(scope)
            try:
                return await self._generate(job_id, request, report)
            finally:
                self._running.discard(scope)
                if not self._running:
                    self._all_finished.set()
        # Only aclose() cancels this scope.
        raise OscarSDError("The local backend was closed before this request finished.")

    async def aclose(self) -> None:
        """Cancel the requests still running or waiting, and wait until they have stopped.

        Result folders already returned stay until their ``cleanup()``.
        """
        self._closed = True
        if not self._running:
            return
        self._all_finished = anyio.Event()
        for scope in list(self._running):
            scope.cancel()
        await self._all_finished.wait()

    async def _generate(
        self, job_id: str, request: GenerationRequest, report: _Reporter
    ) -> GenerationResult:
        from .service import ServiceError

        started = time.monotonic()
        ticket = _Ticket()
        self._line.append(ticket)
        leaves_later = False
        try:
            await self._wait_for_turn(ticket, report)
            if self._label is None:
                report(Stage.GENERATING, "Loading the model (first request only)", step=0)
            await self.load()
            report(Stage.GENERATING, f"Generating with {self._label}", step=0)
            directory = self._results_dir() / job_id
            render = _Render(self, request, directory, report, ticket)
            try:
                # Abandoned on cancel: the caller is free at once (Gradio's Cancel waits
                # for the handler to end, and the page takes no new click until then),
                # while the thread stops at its next step and only then gives up its
                # place in line, so the next request still waits for the pipeline.
                images = await anyio.to_thread.run_sync(render.run, abandon_on_cancel=True)
            except BaseException:
                leaves_later = render.stop()
                if not leaves_later:
                    shutil.rmtree(directory, ignore_errors=True)
                raise
        except ServiceError as exc:
            # ModelLoadError, GenerationError: reported as the OSCAR backend reports a
            # job's error object, so the front ends handle both alike.
            raise JobFailedError(str(exc), job_id, exc.kind) from exc
        finally:
            if not leaves_later:
                self._leave(ticket)
        elapsed = time.monotonic() - started
        paths = [directory / f"{image.index}.png" for image in images]
        report(Stage.DONE, f"{count_of(len(paths), 'image')} in {elapsed:.1f} s")
        return GenerationResult(
            images=paths,
            request=images[0].request,
            job_id=job_id,
            directory=directory,
            timings=Timings(wait=elapsed),
            model=self._label,
        )

    async def _wait_for_turn(self, ticket: _Ticket, report: _Reporter) -> None:
        reported: int | None = None
        while True:
            ahead = self._line.index(ticket)
            if ahead != reported:
                message = "Starting" if ahead == 0 else f"Waiting: {ahead} request(s) ahead"
                report(Stage.QUEUED, message, queue_position=ahead)
                reported = ahead
            if ahead == 0:
                return
            ticket.moved = anyio.Event()
            await ticket.moved.wait()

    def _leave(self, ticket: _Ticket) -> None:
        self._line.remove(ticket)
        for waiting in self._line:
            waiting.moved.set()

    def _results_dir(self) -> Path:
        if self._results_root is None:
            self._results_root = Path(tempfile.mkdtemp(prefix="oscar-sd-results-"))
        return self._results_root

class _Stopped(Exception):
    """Raised in the pipeline's thread at its next step once its request was cancelled."""


class _Render:
    """One generation in a worker thread, which may outlive the task that started it.

    When the awaiting task is cancelled it is not held up until the current
    step ends: :meth:`stop` asks the thread to stop, and the thread, once it
    has, deletes the request's folder and gives up its place in line.
    """

    def __init__(
        self,
        backend: LocalSD,
        request: GenerationRequest,
        directory: Path,
        report: _Reporter,
        ticket: _Ticket,
    ) -> None:
        self._backend = backend
        self._request = request
        self._directory = directory
        self._report = report
        self._ticket = ticket
        self._token = anyio.lowlevel.current_token()
        self._lock = threading.Lock()
        self._stopping = False
        self._finished = False

    def stop(self) -> bool:
        """Ask the thread to stop; True when it still runs and will clean up after itself."""
        with self._lock:
            self._stopping = True
            return not self._finished

    def run(self) -> list[GeneratedImage]:
        """In the worker thread: generate, then write ``1.png … N.png``."""
        from .service import generate_images

        backend = self._backend
        try:
            images = generate_images(
                self._request, model=backend._model, device=backend._device,
                on_step=self._step, interrupt=self._check,
            )
            with self._lock:
                if self._stopping:
                    raise _Stopped
            self._directory.mkdir(parents=True)
            for image in images:
                (self._directory / f"{image.index}.png").write_bytes(image.png)
            return images
        finally:
            with self._lock:
                self._finished = True
                abandoned = self._stopping
            if abandoned:
                shutil.rmtree(self._directory, ignore_errors=True)
                self._leave_line()

    def _check(self) -> None:
        """Called within each step (before each micro-batch): stop here once cancelled."""
        if self._stopping:
            raise _Stopped

    def _step(self, step: int, total: int) -> None:
        """The pipeline's step callback: report the step."""
        self._report.from_thread(step, total, self._token)

    def _leave_line(self) -> None:
        try:
            anyio.from_thread.run_sync(self._backend._leave, self._ticket, token=self._token)
        except RuntimeError:  # the event loop is gone: so is the line
            pass


class _Reporter(ProgressReporter):
    """The shared reporter, plus the step callback of the pipeline's thread."""

    def from_thread(self, step: int, total: int, token: Any) -> None:
        """Report a step from the pipeline's thread (called after each step)."""
        anyio.from_thread.run_sync(
            lambda: self(Stage.GENERATING, f"Step {step} of {total}", step=step, total_steps=total),
            token=token,
        )


async def _choose_auto_model() -> str:
    """sd-turbo when it is cached or the hub answers quickly, else tiny; logs why."""
    from huggingface_hub import HfApi, try_to_load_from_cache

    cached = try_to_load_from_cache(TURBO_MODEL, "model_index.json")
    if isinstance(cached, str):
        logger.info("Model auto: %s (found in the local Hugging Face cache)", TURBO_MODEL)
        return TURBO_MODEL
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        logger.warning(
            "Model auto: tiny (%s is not cached and HF_HUB_OFFLINE is set); "
            "images will be noise, not pictures. %s",
            TURBO_MODEL, REAL_PICTURES,
        )
        return TINY_MODEL
    reason = f"the Hugging Face hub did not answer within {HUB_CHECK_SECONDS:.0f} s"
    # The thread is abandoned on timeout: a hung DNS lookup must not hold up the app.
    with anyio.move_on_after(HUB_CHECK_SECONDS + 1):
        try:
            await anyio.to_thread.run_sync(
                lambda: HfApi().model_info(TURBO_MODEL, timeout=HUB_CHECK_SECONDS),
                abandon_on_cancel=True,
            )
        except Exception as exc:
            reason = f"the Hugging Face hub is not reachable ({type(exc).__name__})"
        else:
            logger.info(
                "Model auto: %s (the hub answered; it is downloaded on first use)", TURBO_MODEL
            )
            return TURBO_MODEL
    logger.warning("Model auto: tiny (%s); images will be noise, not pictures. %s",
                   reason, REAL_PICTURES)
    return TINY_MODEL
