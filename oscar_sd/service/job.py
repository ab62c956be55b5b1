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
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .._errors import InvalidRequestError
from .._models import GenerationRequest
from .errors import EXIT_OK, error_kind, exit_code_for
from .generate import GeneratedImage, generate_images

logger = logging.getLogger("oscar_sd.service")


@dataclass(frozen=True)
class JobOutcome:
    """What a job left in the output folder, and the exit code that goes with it."""

    #: ``<job>.zip`` on success, ``<job>.error.json`` on failure.
    output: Path
    exit_code: int
    #: The ``type`` of the error object, ``None`` on success.
    error_type: str | None = None


def job_name(input_file: Path) -> str:
    """The job id: the input's file name without its extension (``3f2a.json`` → ``3f2a``)."""
    return input_file.name.rsplit(".", 1)[0] if "." in input_file.name else input_file.name


def read_request(input_file: Path) -> GenerationRequest:
    """The request in ``input_file`` (``.json`` or ``.txt``); InvalidRequestError if unusable."""
    suffix = input_file.suffix.lower()
    if suffix not in (".json", ".txt"):
        raise InvalidRequestError(
            "input", f"{input_file.name} is neither a .json request nor a .txt prompt"
        )
    try:
        text = input_file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidRequestError("input", f"{input_file.name} does not exist") from None
    except UnicodeDecodeError:
        raise InvalidRequestError("input", f"{input_file.name} is not UTF-8 text") from None
    if suffix == ".txt":
        return GenerationRequest(prompt=text)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidRequestError(
            "input",
            f"{input_file.name} is not valid JSON ({exc.msg} at line {exc.lineno}, "
            f"column {exc.colno})",
        ) from None
    if not isinstance(data, dict):
        raise InvalidRequestError("input", f"{input_file.name} must hold a JSON object")
    return GenerationRequest(**data)


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

    Never raises for a job failure: every failure becomes ``<job>.error.json``.
    """
    input_file, output_dir = Path(input_file), Path(output_dir)
    job = job_name(input_file)
    try:
        request = read_request(input_file)
        images = generate_images(request, model=model, device=device)
        archive = zip_images(images)
        output = output_dir / f"{job}.zip"
        # One write of finished bytes: every file in the folder gets uploaded, so
        # a half-written zip must never sit there.
        output.write_bytes(archive)
    except Exception as exc:
        return _fail(job, output_dir, exc)
    logger.info("Job %s: wrote %s (%d images)", job, output, len(images))
    return JobOutcome(output, EXIT_OK)


def run_job(
    input_file: Path, output_dir: Path, *, model: str | None = None, device: str | None = None
) -> Path:
    """Run the job of ``input_file``; return the zip or the error object it wrote."""
    return execute_job(input_file, output_dir, model=model, device=device).output


def _fail(job: str, output_dir: Path, exc: Exception) -> JobOutcome:
    kind = error_kind(exc)
    if kind == "InternalError":
        logger.exception("Job %s failed unexpectedly", job)
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
    output = output_dir / f"{job}.error.json"
    output.write_text(json.dumps({"error": message, "type": kind}), encoding="utf-8")
    return JobOutcome(output, exit_code_for(exc), kind)
