"""One OSCAR job: read the input object, write ``<job>.zip`` or ``<job>.error.json``.

The app ↔ service contract (DESIGN.md): the input is ``<job>.json`` (a
:class:`~oscar_sd.GenerationRequest`) or ``<job>.txt`` holding only the
prompt; success is ``<job>.zip`` holding ``1.png … N.png``; any failure is
``<job>.error.json`` ``{"error": "<what to do>", "type": "<kind>"}``, so the
app fails the request at once instead of waiting for its deadline.

>>> run_job(Path("in/3f2a.json"), Path("out"), model="tiny")   # doctest: +SKIP
PosixPath('out/3f2a.zip')
"""

from __future__ import annotations

import io
import json
import logging
import threading
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .._errors import InvalidRequestError
from .._models import MAX_INPUT_BYTES, GenerationRequest
from .errors import EXIT_OK, error_kind, exit_code_for
from .generate import GeneratedImage, generate_images
from .marker import write_started_marker
from .pipeline import LoadTimings, load_pipeline

logger = logging.getLogger("oscar_sd.service")


@dataclass(frozen=True)
class JobOutcome:
    """What a job left in the output folder, and the exit code that goes with it."""

    #: ``<job>.zip`` on success, ``<job>.error.json`` on failure.
    output: Path
    exit_code: int
    #: The ``type`` of the error object, ``None`` on success.
    error_type: str | None = None
    #: Where loading the model went (imports, weights, device); None if it failed.
    load: LoadTimings | None = None
    #: Seconds from the request read to the images encoded, loading excluded.
    generate_seconds: float = 0.0


def job_name(input_file: Path) -> str:
    """The job id: the input's file name without its extension (``3f2a.json`` → ``3f2a``)."""
    return input_file.name.rsplit(".", 1)[0] if "." in input_file.name else input_file.name


def read_request(input_file: Path) -> GenerationRequest:
    """The request in ``input_file`` (``.json`` or ``.txt``); InvalidRequestError if unusable."""
    if input_file.suffix.lower() not in (".json", ".txt"):
        raise InvalidRequestError(
            "input", f"{input_file.name} is neither a .json request nor a .txt prompt"
        )
    try:
        if input_file.stat().st_size > MAX_INPUT_BYTES:
            raise InvalidRequestError(
                "input", f"{input_file.name} is larger than {MAX_INPUT_BYTES // 2**20} MiB"
            )
        data = input_file.read_bytes()
    except FileNotFoundError:
        raise InvalidRequestError("input", f"{input_file.name} does not exist") from None
    return parse_request(input_file.name, data)


def parse_request(name: str, data: bytes) -> GenerationRequest:
    """The request in the input object ``name`` holding ``data``; InvalidRequestError if unusable.

    ``name`` ends in ``.json`` (a :class:`~oscar_sd.GenerationRequest`) or ``.txt`` (a prompt).
    """
    suffix = Path(name).suffix.lower()
    if suffix not in (".json", ".txt"):
        raise InvalidRequestError("input", f"{name} is neither a .json request nor a .txt prompt")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequestError("input", f"{name} is not UTF-8 text") from None
    if suffix == ".txt":
        return GenerationRequest(prompt=text)
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidRequestError(
            "input",
            f"{name} is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})",
        ) from None
    if not isinstance(payload, dict):
        raise InvalidRequestError("input", f"{name} must hold a JSON object")
    return GenerationRequest(**payload)


def zip_images(images: list[GeneratedImage]) -> bytes:
    """The zip of ``1.png … N.png``, stored uncompressed (PNG already is)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for image in images:
            archive.writestr(f"{image.index}.png", image.png)
    return buffer.getvalue()


def execute_job(
    input_file: Path, output_dir: Path, *, model: str | None = None, device: str | None = None
) -> JobOutcome:
    """Run the job of ``input_file`` and report what it wrote and its exit code.

    First it writes ``<job>.started.json`` to the output bucket (:mod:`.marker`),
    in a thread, so that it overlaps loading the model. Never raises for a job
    failure: every failure becomes ``<job>.error.json``.
    """
    input_file, output_dir = Path(input_file), Path(output_dir)
    job = job_name(input_file)
    marker = threading.Thread(target=write_started_marker, args=(job,),
                              name="started-marker", daemon=True)
    marker.start()
    try:
        request = read_request(input_file)
        loaded = load_pipeline(model, device)
        started = time.perf_counter()
        images = generate_images(request, model=model, device=device)
        archive = zip_images(images)
        output = output_dir / f"{job}.zip"
        # One write of finished bytes: every file in the folder gets uploaded, so
        # a half-written zip must never sit there.
        output.write_bytes(archive)
        seconds = time.perf_counter() - started
    except Exception as exc:
        return _fail(job, output_dir, exc)
    finally:
        # The marker must land before the result, which is uploaded after we exit.
        marker.join(timeout=30)
    logger.info("Job %s: wrote %s (%d images, generated in %.2f s; model %s)",
                job, output, len(images), seconds, loaded.timings.describe())
    return JobOutcome(output, EXIT_OK, load=loaded.timings, generate_seconds=seconds)


def run_job(
    input_file: Path, output_dir: Path, *, model: str | None = None, device: str | None = None
) -> Path:
    """Run the job of ``input_file``; return the zip or the error object it wrote."""
    return execute_job(input_file, output_dir, model=model, device=device).output


def _fail(job: str, output_dir: Path, exc: Exception) -> JobOutcome:
    kind = error_kind(exc)
    output = output_dir / f"{job}.error.json"
    output.write_bytes(error_report(job, exc))
    return JobOutcome(output, exit_code_for(exc), kind)


def error_report(job: str, exc: Exception) -> bytes:
    """The body of ``<job>.error.json`` for ``exc``, logged: ``{"error", "type"}``."""
    kind = error_kind(exc)
    if kind == "InternalError":
        logger.error("Job %s failed unexpectedly", job, exc_info=exc)
        # Only the exception's class: its text may hold anything, and the error
        # object travels to the app and to the person.
        message = (
            f"The worker failed unexpectedly ({type(exc).__name__}); "
            "the job's log in OSCAR has the details."
        )
    else:
        logger.error("Job %s failed: %s: %s", job, kind, exc)
        message = str(exc)
    if isinstance(exc, InvalidRequestError):
        message = f"The request is not valid: {message}."
    return json.dumps({"error": message, "type": kind}).encode()
