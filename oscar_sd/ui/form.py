"""The form's values: to a request, and back from a history entry."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from .._errors import InvalidRequestError
from .._models import MAX_SEED, GenerationRequest, GenerationResult

#: (label, value) of the size dropdown; the value is "WIDTHxHEIGHT".
SIZE_PRESETS: list[tuple[str, str]] = [
    ("512 × 512 (square)", "512x512"),
    ("768 × 512 (landscape)", "768x512"),
    ("512 × 768 (portrait)", "512x768"),
    ("768 × 768 (square, large)", "768x768"),
    ("1024 × 576 (wide)", "1024x576"),
    ("1024 × 1024 (square, XL)", "1024x1024"),
]
DEFAULT_SIZE = "512x512"

#: Where the form's names differ from the request's, for error messages.
FIELD_LABELS = {
    "prompt": "Prompt",
    "negative_prompt": "Negative prompt",
    "seed": "Seed",
    "steps": "Steps",
    "guidance_scale": "Guidance",
    "width": "Width",
    "height": "Height",
    "num_images": "Number of images",
    "size": "Size",
    "randomize_seed": "Randomize seed",
    "init_image": "Start image",
    "model": "Model",
    "strength": "Strength",
}


def parse_size(size: str) -> tuple[int, int]:
    """``"768x512"`` (or ``"768 × 512"``) → ``(768, 512)``; empty means the default."""
    if size is not None and not isinstance(size, str):
        raise InvalidRequestError("size", "must be width x height, e.g. 768x512")
    width, _, height = (size or DEFAULT_SIZE).lower().replace("×", "x").partition("x")
    try:
        return int(width), int(height)
    except ValueError:
        raise InvalidRequestError("size", "must be width x height, e.g. 768x512") from None


#: What an empty field means, for the message about a field that is not a number.
EMPTY_MEANS = {
    "seed": "or empty for a random one",
    "steps": "or empty for the model's default",
    "guidance_scale": "or empty for the model's default",
}

#: A form field: typed text, or a number from an API caller; empty means "not set".
FieldValue = str | float | None


def _optional_number(field: str, value: FieldValue) -> float | None:
    """The number in a form field, None when it is empty; the error names the field."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):  # TypeError: a list or an object from an API caller
        raise InvalidRequestError(field, f"must be a number, {EMPTY_MEANS[field]}") from None


def _optional_int(field: str, value: FieldValue) -> int | None:
    number = _optional_number(field, value)
    if number is None:
        return None
    if not number.is_integer():
        raise InvalidRequestError(field, f"must be a whole number, {EMPTY_MEANS[field]}")
    return int(number)


def build_request(
    prompt: str,
    negative_prompt: str,
    seed: FieldValue,
    randomize_seed: bool,
    steps: FieldValue,
    guidance_scale: FieldValue,
    size: str,
    num_images: float | None,
    start_image: bytes | str | None = None,
    strength: float | None = None,
) -> GenerationRequest:
    """The request the form describes; raises :class:`~oscar_sd.InvalidRequestError`.

    The values come as the page or an API caller sent them (Gradio does not
    preprocess them, see ``page.py``), so each is checked for its type here too.
    ``start_image`` (the file's bytes, or base64 text) makes it image to image, at
    ``strength``; without a start image the strength slider means nothing.
    """
    width, height = parse_size(size)
    if randomize_seed is not None and not isinstance(randomize_seed, bool):
        raise InvalidRequestError("randomize_seed", "must be true or false")
    return GenerationRequest(
        # Anything but text fails the request's own check, which names the field.
        prompt=prompt or "",
        negative_prompt=negative_prompt or "",
        seed=None if randomize_seed else _seed(seed),
        # Empty (or 0, as earlier pages sent) means "the model's default", as the hint says.
        steps=_optional_int("steps", steps) or None,
        guidance_scale=_optional_number("guidance_scale", guidance_scale),
        width=width,
        height=height,
        num_images=_image_count(num_images),
        init_image=start_image or None,
        strength=_strength(strength) if start_image else None,
    )


def _seed(value: FieldValue) -> int | None:
    """The typed seed; empty, or -1 as in AUTOMATIC1111, means a random one."""
    seed = _optional_int("seed", value)
    return None if seed == -1 else seed


def _strength(value: object) -> float | None:
    """The strength slider's value; empty means the model's default."""
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidRequestError("strength", "must be a number above 0 up to 1")
    return float(value)


def _image_count(value: object) -> int:
    """The slider's value (a whole number from 1 to 8, checked by the request); empty is 6."""
    if value is None:
        return 6
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != round(value):
        raise InvalidRequestError("num_images", "must be a whole number from 1 to 8")
    return round(value)


@dataclass(frozen=True)
class HistoryEntry:
    """One earlier run of this login: its images and the parameters that made them."""

    images: list[str]
    prompt: str
    negative_prompt: str
    seed: int | None
    steps: int | None
    guidance_scale: float | None
    size: str
    num_images: int
    model: str | None
    #: The name of the run's folder: its id in download links and in the results budget.
    run: str = ""

    @classmethod
    def of(
        cls, result: GenerationResult, *, images: list[Path] | None = None, run: str = ""
    ) -> HistoryEntry:
        """The entry for ``result``, whose images now lie at ``images`` (default: where
        the result says)."""
        request = result.request
        return cls(
            images=[str(path) for path in (images or result.images)],
            prompt=request.prompt,
            negative_prompt=request.negative_prompt,
            seed=request.seed,
            steps=request.steps,
            guidance_scale=request.guidance_scale,
            size=f"{request.width}x{request.height}",
            num_images=request.num_images,
            model=result.model,
            run=run or result.directory.name,
        )

    @property
    def caption(self) -> str:
        prompt = without_bidi_controls(self.prompt)
        prompt = prompt if len(prompt) <= 60 else prompt[:59] + "…"
        return f"{prompt} · seed {self.seed}"

    def form_values(self) -> tuple[Any, ...]:
        """What goes back in the form, in :data:`FORM_ORDER`: the seed is fixed, not random."""
        return (
            self.prompt,
            self.negative_prompt,
            _text(self.seed),
            False,
            _text(self.steps),
            _text(self.guidance_scale),
            self.size,
            self.num_images,
        )


#: Unicode's bidirectional formatting characters: embeddings, overrides (U+202E turns
#: what follows right to left, seed and all), isolates and marks.
BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)


def without_bidi_controls(text: str) -> str:
    """``text`` as the page shows a prompt: each bidi control as a visible ``<U+202E>``,
    so that none reorders what the page writes after it."""
    if not BIDI_CONTROLS.intersection(text):
        return text
    return "".join(f"<U+{ord(c):04X}>" if c in BIDI_CONTROLS else c for c in text)


#: The form's fields in the order the handlers take and give them.
FORM_ORDER = (
    "prompt",
    "negative_prompt",
    "seed",
    "randomize_seed",
    "steps",
    "guidance_scale",
    "size",
    "num_images",
)


def _text(value: float | None) -> str:
    """A number as its form field shows it: empty when not set."""
    if value is None:
        return ""
    return str(int(value)) if float(value).is_integer() else str(value)


#: The PNG text chunks the service writes (oscar_sd/service/metadata.py).
PARAMETERS_KEY = "parameters"
JSON_KEY = "oscar-sd"


@dataclass(frozen=True)
class ImageInfo:
    """What one image says about itself: its A1111 parameters text and its own seed."""

    parameters: str
    seed: int | None


def image_info(path: str | Path) -> ImageInfo:
    """Read an image's text chunks (they come before its pixels: nothing is decoded).

    The service's JSON chunk holds ``{"request", "index", "seed"}`` with the
    seed of that image alone; an image without it has ``seed`` None.
    """
    try:
        with Image.open(path) as image:
            text = dict(getattr(image, "text", {}))
    except OSError:
        return ImageInfo("", None)
    seed: int | None = None
    try:
        described = json.loads(text.get(JSON_KEY, "{}"))
        if isinstance(described, dict) and "request" in described:
            seed = int(described["seed"])
    except (ValueError, TypeError, KeyError):
        seed = None
    return ImageInfo(str(text.get(PARAMETERS_KEY, "")), seed)


def image_seed_of(entry: HistoryEntry, index: int) -> int | None:
    """Image ``index`` (0-based) of a run, by the service's rule: image ``i`` of a batch
    with seed ``S`` has seed ``S + i - 1`` (oscar_sd/service/metadata.py)."""
    return image_seed_of_run(entry.seed, index)


def image_seed_of_run(seed: int | None, index: int) -> int | None:
    """Image ``index`` (0-based) of a run started with ``seed``."""
    if seed is None:
        return None
    return (seed + index) % (MAX_SEED + 1)
