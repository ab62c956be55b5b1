"""What goes in (a request), what comes out (a result), and what happens between (progress)."""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import io
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
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ._errors import InvalidRequestError

logger = logging.getLogger("oscar_sd")

MAX_SEED = 2**32 - 1
#: The longest prompt (and negative prompt) a request may carry, in characters.
MAX_PROMPT_CHARS = 2000
#: The most bytes a start image (image to image) may have, decoded; it travels inside
#: the input object, base64-encoded (a third more), never as an object of its own.
MAX_START_IMAGE_BYTES = 4 * 1024 * 1024
#: The most pixels along a side of a start image.
MAX_START_IMAGE_SIDE = 4096
#: The most bytes of an input object a worker reads: the request with its start image.
MAX_INPUT_BYTES = MAX_START_IMAGE_BYTES * 4 // 3 + 64 * 1024


class GenerationRequest(BaseModel):
    """One request: the JSON input object of the app-service contract.

    ``seed``, ``steps`` and ``guidance_scale`` may be left as ``None``: a random
    seed is drawn before the request is sent (and reported in the result), and
    the service picks the steps and guidance its model is made for.

    Image to image: ``init_image`` is the start image (PNG, JPEG or WebP bytes, a
    path, or base64 text; kept as base64 PNG, at most 4 MiB), resized to
    ``width`` x ``height``; ``strength`` (0 < s <= 1, default the model's) is how
    much of it is changed: 0.3 keeps its layout, 1.0 keeps almost nothing. Only
    ``int(steps * strength)`` denoising steps run.

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
    #: The start image of image to image: base64 PNG (see the class docstring).
    init_image: str | None = Field(default=None, repr=False)
    strength: float | None = None

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

    @field_validator("init_image", mode="before")
    @classmethod
    def _init_image(cls, value: Any) -> str | None:
        if value is None:
            return None
        if isinstance(value, Path):
            try:
                value = value.read_bytes()
            except OSError as exc:
                raise ValueError(f"cannot be read ({exc.strerror or exc})") from None
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("data:"):  # a data: URL, as browsers write them
                text = text.partition(",")[2]
            if len(text) > MAX_START_IMAGE_BYTES * 4 // 3 + 8:
                raise ValueError(_too_big(len(text) * 3 // 4))
            try:
                value = base64.b64decode(text, validate=True)
            except (binascii.Error, ValueError):
                raise ValueError("must be an image file, or its bytes in base64") from None
        if not isinstance(value, (bytes, bytearray)):
            raise ValueError("must be an image file, or its bytes in base64")
        return base64.b64encode(_as_png(bytes(value))).decode("ascii")

    @field_validator("strength")
    @classmethod
    def _strength(cls, value: float | None) -> float | None:
        if value is not None and not 0.0 < value <= 1.0:
            raise ValueError("must be above 0 and at most 1 (the share of the start image redrawn)")
        return value

    @model_validator(mode="after")
    def _strength_needs_image(self) -> GenerationRequest:
        if self.strength is not None and self.init_image is None:
            raise InvalidRequestError(
                "strength", "applies to image to image only: give a start image too"
            )
        return self

    @property
    def start_image(self) -> bytes | None:
        """The start image's PNG bytes (image to image), or None for text to image."""
        return None if self.init_image is None else base64.b64decode(self.init_image)

    @property
    def start_image_digest(self) -> str | None:
        """The SHA-256 of the start image's PNG, which the images' parameters name."""
        data = self.start_image
        return None if data is None else hashlib.sha256(data).hexdigest()

    def with_seed(self) -> GenerationRequest:
        """This request with a concrete seed, drawn at random when none was given."""
        if self.seed is not None:
            return self
        return self.model_copy(update={"seed": secrets.randbelow(MAX_SEED + 1)})

    def to_payload(self) -> dict[str, Any]:
        """The JSON body of the input object (README, the app-service contract).

        A text-to-image request leaves out ``init_image`` and ``strength``, so
        services that predate image to image still take it.
        """
        payload = self.model_dump()
        if self.init_image is None:
            payload.pop("init_image")
            payload.pop("strength")
        return payload


def _too_big(size: int) -> str:
    return (f"is {size / 2**20:.1f} MiB; the limit is {MAX_START_IMAGE_BYTES // 2**20} MiB "
            "(save it smaller, or as JPEG)")


def _as_png(data: bytes) -> bytes:
    """``data`` (an image file) as PNG bytes, checked; ValueError says what is wrong."""
    from PIL import Image, UnidentifiedImageError

    if len(data) > MAX_START_IMAGE_BYTES:
        raise ValueError(_too_big(len(data)))
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if max(width, height) > MAX_START_IMAGE_SIDE:
                raise ValueError(f"is {width}x{height} pixels; the limit is "
                                 f"{MAX_START_IMAGE_SIDE} on each side")
            if image.format == "PNG":
                image.verify()  # a truncated or corrupt PNG fails here
                return data
            image.load()
            converted = image.convert("RGBA" if "A" in image.getbands() else "RGB")
    except (UnidentifiedImageError, OSError, SyntaxError):
        raise ValueError("is not an image Pillow can read (use PNG, JPEG or WebP)") from None
    buffer = io.BytesIO()
    converted.save(buffer, format="PNG")
    if buffer.tell() > MAX_START_IMAGE_BYTES:
        raise ValueError(_too_big(buffer.tell()))
    return buffer.getvalue()


def _friendly(exc: ValidationError) -> InvalidRequestError:
    """Turn pydantic's report into one sentence naming the first bad field."""
    error = exc.errors()[0]
    raised = (error.get("ctx") or {}).get("error")
    if isinstance(raised, InvalidRequestError):  # a check across fields names its own
        return raised
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
    #: OSCAR's Kueue holds the job Suspended: the owner's quota does not admit it (yet).
    QUOTA = "quota"
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


#: How far along each stage is. Stages of one rank may follow each other either way
#: (Kueue admits a job: "quota" becomes "waiting"); a lower rank never follows a higher.
_RANK = {
    Stage.QUEUED: 0, Stage.UPLOADED: 1, Stage.WAITING: 2, Stage.QUOTA: 2,
    Stage.RUNNING: 3, Stage.GENERATING: 3, Stage.DOWNLOADING: 4, Stage.DONE: 5,
}


class ProgressReporter:
    """Hands progress to a caller's callback, with the time since the request began.

    Both backends report through it, so a broken progress display never
    breaks a generation on either of them. Stages never go backwards: news
    comes from several tasks (the upload, the job's started marker, the job
    watch), and a marker may be heard before the upload call returns; a
    request already running on the GPU is then not said to wait for one again.
    """

    def __init__(self, on_progress: ProgressCallback | None) -> None:
        self._on_progress = on_progress
        self._started = time.monotonic()
        #: The furthest stage reported so far (None before the first report).
        self.stage: Stage | None = None

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self._started

    def at_least(self, stage: Stage) -> Stage:
        """``stage``, or the stage already reached when that is further along: for news
        that belongs to no stage of its own (an outage's "retrying")."""
        if self.stage is not None and _RANK[self.stage] > _RANK[stage]:
            return self.stage
        return stage

    def __call__(self, stage: Stage, message: str, **fields: Any) -> None:
        if self.stage is not None and _RANK[stage] < _RANK[self.stage]:
            logger.debug("progress %s after %s not reported: stages never go back",
                         stage.value, self.stage.value)
            return
        self.stage = stage
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
