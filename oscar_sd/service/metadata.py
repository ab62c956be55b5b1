"""The generation parameters each PNG carries, so any image can be made again.

Two text chunks:

- ``parameters``: the AUTOMATIC1111 web UI's format, which many image tools
  read::

      a red fox
      Negative prompt: blurry
      Steps: 1, Sampler: EulerDiscreteScheduler, CFG scale: 0.0, Seed: 42, \
      Size: 512x512, Model: stabilityai/sd-turbo

  (one line; broken here to fit). As in A1111, the ``Negative prompt:`` line is
  left out when there is none.

- ``oscar-sd``: JSON ``{"request": {...}, "index": i, "seed": s}``: the whole
  request (with the seed, steps and guidance actually used), the image's
  1-based place in the batch, and the seed of that image alone.

Seeds: image ``i`` of a request with seed ``S`` starts from the noise of
``S + i - 1`` (mod 2**32), so re-running the request with that seed and
``num_images=1`` makes image ``i`` again.

>>> from PIL import Image
>>> Image.open("1.png").text["parameters"]  # doctest: +SKIP
"""

from __future__ import annotations

import io
import json
from typing import Any

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from .._models import MAX_SEED, GenerationRequest

PARAMETERS_KEY = "parameters"
JSON_KEY = "oscar-sd"


def image_seed(batch_seed: int, index: int) -> int:
    """The seed of image ``index`` (1-based) of a batch started with ``batch_seed``."""
    return (batch_seed + index - 1) % (MAX_SEED + 1)


def parameters_text(request: GenerationRequest, seed: int, sampler: str, model: str) -> str:
    """The A1111-style ``parameters`` text of one image (``request`` fully resolved)."""
    # A1111 writes the line only for a negative prompt that is there.
    negative = f"Negative prompt: {request.negative_prompt}\n" if request.negative_prompt else ""
    # A1111 writes "Denoising strength" for image to image; the start image is named
    # by its SHA-256 (its bytes stay out of every PNG).
    start = ("" if request.init_image is None else
             f", Denoising strength: {request.strength}, "
             f"Start image: sha256 {request.start_image_digest}")
    return (
        f"{request.prompt}\n"
        f"{negative}"
        f"Steps: {request.steps}, Sampler: {sampler}, CFG scale: {request.guidance_scale}, "
        f"Seed: {seed}, Size: {request.width}x{request.height}, Model: {model}{start}"
    )


def metadata_json(request: GenerationRequest, index: int, seed: int) -> str:
    """The ``oscar-sd`` JSON text of image ``index`` of ``request``."""
    payload = request.to_payload()
    if payload.pop("init_image", None) is not None:
        payload["init_image_sha256"] = request.start_image_digest
    return json.dumps({"request": payload, "index": index, "seed": seed})


def encode_png(image: Image.Image, texts: dict[str, str]) -> bytes:
    """``image`` as PNG bytes carrying ``texts`` as text chunks."""
    info = PngInfo()
    for key, value in texts.items():
        # iTXt keeps any Unicode a prompt may hold; tEXt is Latin-1 only.
        info.add_itxt(key, value)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def read_metadata(png: bytes) -> dict[str, Any]:
    """The ``oscar-sd`` JSON of a PNG made by the service (``{}`` if it has none)."""
    with Image.open(io.BytesIO(png)) as image:
        text = getattr(image, "text", {}).get(JSON_KEY)
    return json.loads(text) if text else {}
