"""Turn a request into PNGs: the one code path of the OSCAR job and the local backend.

>>> from oscar_sd import GenerationRequest
>>> images = generate_images(GenerationRequest(prompt="a red fox", num_images=2,
...                                            width=64, height=64, seed=7), model="tiny")
>>> [(image.index, image.seed) for image in images]
[(1, 7), (2, 8)]

All images come from ONE batched pipeline call (``num_images_per_prompt``).
Each image has its own ``torch.Generator`` seeded ``seed + i - 1`` (see
:mod:`.metadata`), created on the CPU so the starting noise is the same on any
hardware; the same request on the same hardware gives the same images.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from .._errors import InvalidRequestError
from .._models import GenerationRequest
from .errors import GenerationError
from .metadata import (
    JSON_KEY,
    PARAMETERS_KEY,
    encode_png,
    image_seed,
    metadata_json,
    parameters_text,
)
from .pipeline import LoadedModel, ModelProfile, load_pipeline

logger = logging.getLogger("oscar_sd.service")

#: Called after each denoising step with (steps done, total steps). It may raise
#: to stop the generation at that step (the local backend does, on cancellation).
StepCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class GeneratedImage:
    """One image of a request, encoded as PNG with its parameters inside."""

    #: 1-based place in the batch; the file is ``<index>.png``.
    index: int
    #: The seed that makes this image alone (with ``num_images=1``).
    seed: int
    png: bytes
    #: The request as run: seed, steps and guidance filled in.
    request: GenerationRequest
    #: The A1111-style ``parameters`` text also stored in the PNG.
    parameters: str


def resolve_request(request: GenerationRequest, profile: ModelProfile) -> GenerationRequest:
    """``request`` with its seed drawn and the model's default steps and guidance filled in."""
    request = request.with_seed()
    steps = request.steps if request.steps is not None else profile.default_steps
    if steps > profile.max_steps:
        raise InvalidRequestError(
            "steps",
            f"must be between 1 and {profile.max_steps} for {profile.label} "
            f"(a few-step model); leave it empty for {profile.default_steps}",
        )
    guidance = (
        request.guidance_scale
        if request.guidance_scale is not None
        else profile.default_guidance
    )
    return request.model_copy(update={"steps": steps, "guidance_scale": guidance})


def generate_images(
    request: GenerationRequest,
    *,
    model: str | None = None,
    device: str | None = None,
    on_step: StepCallback | None = None,
) -> list[GeneratedImage]:
    """Make the ``request.num_images`` images of ``request`` with ``model`` (default:
    ``$OSCAR_SD_MODEL``) on ``device`` (default: the GPU if any).

    Raises :class:`~oscar_sd.InvalidRequestError` for a request the model cannot
    run, :class:`.ModelLoadError` and :class:`.GenerationError`. Whatever
    ``on_step`` raises stops the generation and propagates unchanged.
    """
    loaded = load_pipeline(model, device)
    resolved = resolve_request(request, loaded.profile)
    pictures = _run_pipeline(loaded, resolved, on_step)
    sampler = type(loaded.pipeline.scheduler).__name__
    images = []
    for index, picture in enumerate(pictures, start=1):
        seed = image_seed(resolved.seed, index)  # type: ignore[arg-type]
        parameters = parameters_text(resolved, seed, sampler, loaded.profile.label)
        png = encode_png(
            picture,
            {PARAMETERS_KEY: parameters, JSON_KEY: metadata_json(resolved, index, seed)},
        )
        images.append(GeneratedImage(index, seed, png, resolved, parameters))
    return images


def _run_pipeline(
    loaded: LoadedModel, request: GenerationRequest, on_step: StepCallback | None
) -> list[Any]:
    generators = [
        torch.Generator("cpu").manual_seed(image_seed(request.seed, index))  # type: ignore[arg-type]
        for index in range(1, request.num_images + 1)
    ]

    # What on_step raised, so it propagates as itself rather than as a GenerationError.
    stopped_by: list[BaseException] = []

    def step_end(pipe: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        if on_step is not None:
            try:
                on_step(step + 1, pipe.num_timesteps)
            except BaseException as exc:
                stopped_by.append(exc)
                raise
        return tensors

    logger.info(
        "Generating %d image(s) of %dx%d, %d step(s), guidance %s, seed %d",
        request.num_images,
        request.width,
        request.height,
        request.steps,
        request.guidance_scale,
        request.seed,
    )
    started = time.perf_counter()
    try:
        with loaded.run_lock, torch.inference_mode():
            output = loaded.pipeline(
                prompt=request.prompt,
                negative_prompt=request.negative_prompt or None,
                num_inference_steps=request.steps,
                guidance_scale=request.guidance_scale,
                width=request.width,
                height=request.height,
                num_images_per_prompt=request.num_images,
                generator=generators,
                callback_on_step_end=step_end,
            )
    except torch.OutOfMemoryError as exc:
        raise GenerationError(
            f"The {loaded.device} ran out of memory making {request.num_images} image(s) of "
            f"{request.width}x{request.height}; ask for fewer images or a smaller size."
        ) from exc
    except Exception as exc:
        if exc in stopped_by:
            raise
        logger.exception("Generation failed")
        raise GenerationError(
            f"The model failed while making the images ({type(exc).__name__}); "
            "try again, and if it fails again try fewer images or a smaller size."
        ) from exc
    seconds = time.perf_counter() - started
    logger.info("Generated %d image(s) in %.2f s", request.num_images, seconds)
    return list(output.images)

