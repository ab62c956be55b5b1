"""Small helpers shared by the tests."""

from __future__ import annotations

import io
import time
from collections.abc import Callable

import anyio
import anyio.to_thread
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


async def until(
    predicate: Callable[[], bool], limit: float = 10.0, what: str = "condition not reached"
) -> None:
    """A deadline-bounded wait for state another thread changes (no event exists for it)."""

    def poll() -> None:
        deadline = time.monotonic() + limit
        while not predicate():
            assert time.monotonic() < deadline, what
            time.sleep(0.01)

    with anyio.fail_after(limit + 5):
        await anyio.to_thread.run_sync(poll)
