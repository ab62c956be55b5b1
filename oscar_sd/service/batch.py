"""Several requests in one pipeline call, each image the same as when its request runs alone.

Requests share a call when they share a shape (:func:`shape_key`): size, steps,
image to image or not and its strength (which sets how many steps run), and
guidance (diffusers runs classifier-free guidance when ``guidance_scale > 1``,
with ONE scale for the whole call, so guided requests share a call only with
the same scale; unguided ones ignore the scale and share regardless).
:func:`plan_batches` packs them, in arrival order, into calls of at most
``OSCAR_SD_MAX_BATCH_IMAGES`` images (default 24); a request is never split.

What keeps a request's pixels independent of its batch-mates:

- its starting noise comes from its own generators, seeds ``seed + i - 1``,
  created on the CPU (as when it runs alone);
- its prompt and negative prompt are encoded on their own (a batch of one),
  then repeated per image, exactly as the pipeline does for one prompt;
- the UNet and the VAE run in fixed-size micro-batches (:mod:`.microbatch`).

>>> from oscar_sd import GenerationRequest
>>> a = GenerationRequest(prompt="a fox", width=64, height=64, steps=2, num_images=2)
>>> b = a.model_copy(update={"prompt": "an owl", "guidance_scale": 0.5})
>>> plan_batches([a, b, a.model_copy(update={"width": 128})], max_images=24,
...              key=lambda r: shape_key(r))
[[0, 1], [2]]
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .._models import GenerationRequest
from .errors import GenerationError
from .metadata import image_seed
from .microbatch import interruptible
from .pipeline import LoadedModel

logger = logging.getLogger("oscar_sd.service")

DEFAULT_MAX_BATCH_IMAGES = 24

#: Called after each denoising step with (steps done, total steps). It may raise
#: to stop the generation at that step (the local backend does, on cancellation).
StepCallback = Callable[[int, int], None]
#: Called often while a call runs (before each micro-batch and after each step): it
#: may raise to stop the call there (a cancelled request).
Interrupt = Callable[[], None]


@dataclass(frozen=True)
class ShapeKey:
    """What requests must share to run in one pipeline call."""

    width: int
    height: int
    steps: int
    #: The guidance scale when guidance is on (> 1), else None: one scale per call.
    guidance: float | None
    #: Image to image: the strength (one per call: it sets the steps run); None: text to image.
    strength: float | None = None


def shape_key(request: GenerationRequest, embeds_guidance: bool = False) -> ShapeKey:
    """The batching key of a resolved ``request`` (steps and guidance filled in).

    ``embeds_guidance``: the UNet takes the scale as an input even without
    classifier-free guidance (LCM-distilled models), so it must match exactly.
    """
    guidance = float(request.guidance_scale or 0.0)
    on = guidance > 1.0 or embeds_guidance
    strength = None if request.init_image is None else float(request.strength or 0.0)
    return ShapeKey(request.width, request.height, int(request.steps or 0),
                    guidance if on else None, strength)


def max_batch_images_from_env() -> int:
    """``OSCAR_SD_MAX_BATCH_IMAGES``: the most images one pipeline call makes (default 24)."""
    text = os.environ.get("OSCAR_SD_MAX_BATCH_IMAGES", "").strip()
    if not text:
        return DEFAULT_MAX_BATCH_IMAGES
    if not text.isdigit() or int(text) < 1:
        raise ValueError(
            f"OSCAR_SD_MAX_BATCH_IMAGES={text!r} is not a whole number >= 1; "
            f"unset it for {DEFAULT_MAX_BATCH_IMAGES}"
        )
    return int(text)


def plan_batches(
    requests: Sequence[GenerationRequest],
    max_images: int,
    key: Callable[[GenerationRequest], ShapeKey],
) -> list[list[int]]:
    """Indices of ``requests`` grouped into pipeline calls, first come first served.

    A call holds requests of one shape and at most ``max_images`` images (a
    request with more images than that runs alone). Calls are ordered by their
    first request, so the oldest request runs first.
    """
    batches: list[list[int]] = []
    open_batch: dict[ShapeKey, tuple[list[int], int]] = {}
    for index, request in enumerate(requests):
        shape = key(request)
        members, images = open_batch.get(shape, ([], 0))
        if members and images + request.num_images > max_images:
            members, images = [], 0
        if not members:
            batches.append(members)
        members.append(index)
        open_batch[shape] = (members, images + request.num_images)
    return batches


def embeds_guidance(loaded: LoadedModel) -> bool:
    """True when the model's UNet takes the guidance scale as an input (LCM models)."""
    unet = getattr(loaded.pipeline, "unet", None)
    return getattr(getattr(unet, "config", None), "time_cond_proj_dim", None) is not None


def run_batch(
    loaded: LoadedModel,
    requests: Sequence[GenerationRequest],
    on_step: StepCallback | None,
    interrupt: Interrupt | None = None,
) -> list[list[Any]]:
    """One pipeline call for resolved ``requests`` of one shape: each request's PIL images.

    Raises :class:`.GenerationError`; whatever ``on_step`` or ``interrupt`` raises
    propagates unchanged.
    """
    import torch

    first = requests[0]
    guided = float(first.guidance_scale or 0.0) > 1.0
    total = sum(request.num_images for request in requests)
    generators = [
        torch.Generator("cpu").manual_seed(image_seed(request.seed, index))  # type: ignore[arg-type]
        for request in requests
        for index in range(1, request.num_images + 1)
    ]
    # What on_step raised, so it propagates as itself rather than as a GenerationError.
    stopped_by: list[BaseException] = []

    def checkpoint() -> None:
        if interrupt is not None:
            try:
                interrupt()
            except BaseException as exc:
                stopped_by.append(exc)
                raise

    def step_end(pipe: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        checkpoint()
        if on_step is not None:
            try:
                on_step(step + 1, pipe.num_timesteps)
            except BaseException as exc:
                stopped_by.append(exc)
                raise
        return tensors

    logger.info(
        "Generating %d image(s) for %d request(s): %dx%d, %d step(s), guidance %s%s",
        total, len(requests), first.width, first.height, first.steps, first.guidance_scale,
        "" if first.init_image is None else f", from start images at strength {first.strength}",
    )
    started = time.perf_counter()
    try:
        with loaded.run_lock, torch.inference_mode(), interruptible(checkpoint):
            checkpoint()  # cancelled while it waited for the lock: nothing to do
            prompts = _prompt_arguments(loaded, requests, guided)
            if first.init_image is None:
                pipeline = loaded.pipeline
                shape: dict[str, Any] = {"width": first.width, "height": first.height}
            else:
                # One start image per image made, each encoded on its own with that
                # image's generator: the same whether the request runs alone or batched.
                pipeline = loaded.image_to_image()
                shape = {"image": _start_images(requests), "strength": first.strength}
            output = pipeline(
                **prompts,
                **shape,
                num_inference_steps=first.steps,
                guidance_scale=first.guidance_scale,
                num_images_per_prompt=1,
                generator=generators,
                callback_on_step_end=step_end,
            )
    except torch.OutOfMemoryError as exc:
        raise GenerationError(
            f"The {loaded.device} ran out of memory making {total} image(s) of "
            f"{first.width}x{first.height}; ask for fewer images or a smaller size."
        ) from exc
    except Exception as exc:
        if exc in stopped_by:
            raise
        logger.exception("Generation failed")
        raise GenerationError(
            f"The model failed while making the images ({type(exc).__name__}); "
            "try again, and if it fails again try fewer images or a smaller size."
        ) from exc
    logger.info("Generated %d image(s) in %.2f s", total, time.perf_counter() - started)
    pictures = list(output.images)
    split, start = [], 0
    for request in requests:
        split.append(pictures[start : start + request.num_images])
        start += request.num_images
    return split


def start_image(request: GenerationRequest) -> Any:
    """The request's start image as an RGB PIL image of the request's size."""
    import io

    from PIL import Image

    data = request.start_image
    if data is None:
        raise ValueError("not an image-to-image request")
    with Image.open(io.BytesIO(data)) as opened:
        image = opened.convert("RGB")
    size = (request.width, request.height)
    if image.size != size:
        # Stretched to the size asked for, as A1111's "just resize": the page's size
        # control means the same for both kinds of request.
        image = image.resize(size, Image.Resampling.LANCZOS)
    return image


def _start_images(requests: Sequence[GenerationRequest]) -> list[Any]:
    images = []
    for request in requests:
        image = start_image(request)
        images.extend([image] * request.num_images)
    return images


def _prompt_arguments(
    loaded: LoadedModel, requests: Sequence[GenerationRequest], guided: bool
) -> dict[str, Any]:
    """The prompt arguments of the call: per-request embeddings where the pipeline allows."""
    from diffusers import StableDiffusionPipeline

    pipeline = loaded.pipeline
    if not isinstance(pipeline, StableDiffusionPipeline):
        # Other pipelines (SDXL: two encoders, pooled embeddings): one prompt per image.
        # Their text encoders then see the whole batch; images stay identical to a
        # lone run only as far as those kernels are batch-invariant.
        return {
            "prompt": [r.prompt for r in requests for _ in range(r.num_images)],
            "negative_prompt": [r.negative_prompt for r in requests for _ in range(r.num_images)]
            if guided else None,
        }
    positives, negatives = [], []
    for request in requests:
        positive, negative = pipeline.encode_prompt(
            request.prompt, loaded.device, 1, guided, request.negative_prompt or None
        )
        positives.append(positive.repeat(request.num_images, 1, 1))
        if guided:
            negatives.append(negative.repeat(request.num_images, 1, 1))
    import torch

    return {
        "prompt_embeds": torch.cat(positives),
        "negative_prompt_embeds": torch.cat(negatives) if guided else None,
    }
