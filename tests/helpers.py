"""Small helpers shared by the tests of the service worker and the local backend."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from oscar_sd import GenerationRequest


def small_request(**fields: object) -> GenerationRequest:
    """A request the tiny model runs in a moment: 64x64, three images."""
    values: dict[str, object] = {"prompt": "a red fox", "width": 64, "height": 64, "num_images": 3}
    values.update(fields)
    return GenerationRequest(**values)


def pixels(png: bytes) -> np.ndarray:
    """A PNG's RGB pixels, signed so that differences can be taken."""
    with Image.open(io.BytesIO(png)) as image:
        return np.asarray(image.convert("RGB")).astype(np.int16)
