"""What goes in (a request), what comes out (a result), and what happens between (progress)."""

from __future__ import annotations

import enum
import logging
import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from ._errors import InvalidRequestError

logger = logging.getLogger("oscar_sd")

MAX_SEED = 2**32 - 1
#: The longest prompt (and negative prompt) a request may carry, in characters.
MAX_PROMPT_CHARS = 2000


class GenerationRequest(BaseModel):
    """One text-to-image request: the JSON input object of the app-service contract.

    ``seed``, ``steps`` and ``guidance_scale`` may be left as ``None``: a random
    seed is drawn before the request is sent (and reported in the result), and
    the service picks the steps and guidance its model is made for.

    >>> GenerationRequest(prompt="a lighthouse at dusk", num_images=2).num_images
    2
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    prompt: str
    negative_prompt: str = ""
    seed: int | None = None
    steps: int | None = None
    guidance_scale: float | None = None
    width: int = 512
    height: int = 512
    num_images: int = 6

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise _friendly(exc) from None

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("is empty: type what the images should show")
        if len(value) > MAX_PROMPT_CHARS:
            raise ValueError(
                f"is {len(value):,} characters long; the limit is {MAX_PROMPT_CHARS:,}")
        return value

    @field_validator("negative_prompt")
    @classmethod
    def _negative_prompt(cls, value: str) -> str:
        value = value.strip()
        if len(value) > MAX_PROMPT_CHARS:
            raise ValueError(
                f"is {len(value):,} characters long; the limit is {MAX_PROMPT_CHARS:,}")
        return value

    @field_validator("seed")
    @classmethod
    def _seed(cls, value: int | None) -> int | None:
        if value is not None and not 0 <= value <= MAX_SEED:
            raise ValueError(f"must be between 0 and {MAX_SEED}, or empty for a random one")
        return value

    @field_validator("steps")
    @classmethod
    def _steps(cls, value: int | None) -> int | None:
        if value is not None and not 1 <= value <= 150:
            raise ValueError("must be between 1 and 150")
        return value

    @field_validator("guidance_scale")
    @classmethod
    def _guidance(cls, value: float | None) -> float | None:
        if value is not None and not 0.0 <= value <= 30.0:
            raise ValueError("must be between 0 and 30")
        return value

    @field_validator("width", "height")
    @classmethod
    def _size(cls, value: int) -> int:
        if not 64 <= value <= 2048 or value % 8:
            raise ValueError("must be a multiple of 8 between 64 and 2048")
        return value

    @field_validator("num_images")
    @classmethod
    def _num_images(cls, value: int) -> int:
        if not 1 <= value <= 8:
            raise ValueError("must be between 1 and 8")
        return value

    def with_seed(self) -> GenerationRequest:
        """This request with a concrete seed, drawn at random when none was given."""
        if self.seed is not None:
            return self
        return self.model_copy(update={"seed": secrets.randbelow(MAX_SEED + 1)})

    def to_payload(self) -> dict[str, Any]:
        """The JSON body of the input object (DESIGN.md, the app-service contract)."""
        return self.model_dump()


def _friendly(exc: ValidationError) -> InvalidRequestError:
    """Turn pydantic's report into one sentence naming the first bad field."""
    error = exc.errors()[0]
    name = ".".join(str(part) for part in error["loc"]) or "request"
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "is not a field of a generation request"
    elif error["type"] == "missing":
        message = "is required"
    elif error["type"] == "string_type":
        message = "must be text"
    return InvalidRequestError(name, message)


class Stage(str, enum.Enum):
    """Where a request is. The OSCAR backend and the local backend report the same stages."""

    QUEUED = "queued"
    UPLOADED = "uploaded"
    WAITING = "waiting"
    #: The job runs on the cluster's GPU (its pod started); reported by backends that know it.
    RUNNING = "running"
    GENERATING = "generating"
    DOWNLOADING = "downloading"
    DONE = "done"


@dataclass(frozen=True)
class Progress:
    """A progress report handed to ``on_progress``."""

    stage: Stage
    message: str
    elapsed: float = 0.0
    step: int | None = None
    total_steps: int | None = None
    queue_position: int | None = None
    #: Which path runs the request where a service has two: "warm" (its long-running
    #: replicas) or "per-job" (an OSCAR job of its own); None where there is one.
    route: str | None = None


ProgressCallback = Callable[[Progress], None]


def count_of(number: int, noun: str) -> str:
    """``"1 image"``, ``"6 images"``: a count with its noun in the right number."""
    return f"{number} {noun}{'' if number == 1 else 's'}"


class ProgressReporter:
    """Hands progress to a caller's callback, with the time since the request began.

    Both backends report through it, so a broken progress display never
    breaks a generation on either of them.
    """

    def __init__(self, on_progress: ProgressCallback | None) -> None:
        self._on_progress = on_progress
        self._started = time.monotonic()

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self._started

    def __call__(self, stage: Stage, message: str, **fields: Any) -> None:
        if self._on_progress is None:
            return
        try:
            self._on_progress(Progress(stage, message, elapsed=self.elapsed, **fields))
        except Exception:
            logger.exception("on_progress raised; generation goes on")


@dataclass(frozen=True)
class Timings:
    """Seconds spent in each phase of one request."""

    upload: float = 0.0
    wait: float = 0.0
    download: float = 0.0

    @property
    def total(self) -> float:
        return self.upload + self.wait + self.download


@dataclass
class GenerationResult:
    """The images of one request, in a directory of their own.

    ``request`` carries the seed actually used, so any result can be reproduced.
    The files stay until :meth:`cleanup` is called, or until the ``with`` (or
    ``async with``) block that holds the result ends:

    >>> async with await sd.generate("a lighthouse") as result:  # doctest: +SKIP
    ...     shutil.copy(result.images[0], "lighthouse.png")
    """

    images: list[Path]
    request: GenerationRequest
    job_id: str
    directory: Path
    timings: Timings = field(default_factory=Timings)
    model: str | None = None

    def cleanup(self) -> None:
        """Delete the result's directory and its images (again is harmless)."""
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> GenerationResult:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.cleanup()

    async def __aenter__(self) -> GenerationResult:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        # Deleting files is blocking work: off the event loop.  Shielded, so that a
        # cancelled block still frees its files.
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self.cleanup)
