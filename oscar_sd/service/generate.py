"""Turn requests into PNGs: the one code path of the OSCAR job, the local backend and
the warm worker.

>>> from oscar_sd import GenerationRequest
>>> images = generate_images(GenerationRequest(prompt="a red fox", num_images=2,
...                                            width=64, height=64, seed=7), model="tiny")
>>> [(image.index, image.seed) for image in images]
[(1, 7), (2, 8)]

:func:`generate_batch` runs several requests, those of one shape in one
pipeline call (:mod:`.batch`); :func:`generate_images` is a batch of one. Each
image has its own ``torch.Generator`` seeded ``seed + i - 1`` (see
:mod:`.metadata`), created on the CPU so the starting noise is the same on any
hardware; a request makes the same images alone or batched with others, and
the same request on the same hardware gives the same images.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._errors import InvalidRequestError
from .._models import GenerationRequest
from .batch import (
    Interrupt,
    StepCallback,
    embeds_guidance,
    max_batch_images_from_env,
    plan_batches,
    run_batch,
    shape_key,
)
from .errors import ConfigurationError, ServiceError
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

__all__ = [
    "GeneratedImage",
    "RequestOutcome",
    "StepCallback",
    "generate_batch",
    "generate_images",
    "resolve_request",
]


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
    """``request`` with its seed drawn and the model's default steps and guidance filled in
    (and, for image to image, its strength)."""
    request = request.with_seed()
    steps = request.steps if request.steps is not None else profile.default_steps
    strength = None
    if request.init_image is not None:
        strength = request.strength if request.strength is not None else profile.default_strength
        if request.steps is None:
            # Only int(steps * strength) steps run: at least one must.
            steps = min(max(steps, math.ceil(1 / strength - 1e-9)), profile.max_steps)
        if int(steps * strength) < 1:
            raise InvalidRequestError(
                "strength",
                f"{strength:g} with {steps} step(s) leaves no denoising step "
                f"(steps x strength must be at least 1): raise the strength or the steps",
            )
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
    return request.model_copy(
        update={"steps": steps, "guidance_scale": guidance, "strength": strength}
    )


@dataclass(frozen=True)
class RequestOutcome:
    """What :func:`generate_batch` made of one request: its images, or why there are none."""

    #: The request as given.
    request: GenerationRequest
    images: list[GeneratedImage] = field(default_factory=list)
    #: An :class:`~oscar_sd.InvalidRequestError` or a :class:`.ServiceError`, else None.
    error: Exception | None = None


#: Told each request's outcome (its index in the list) as soon as its call ends.
OutcomeCallback = Callable[[int, RequestOutcome], None]


def generate_batch(
    requests: Sequence[GenerationRequest],
    *,
    model: str | None = None,
    device: str | None = None,
    max_images: int | None = None,
    on_step: StepCallback | None = None,
    on_outcome: OutcomeCallback | None = None,
    interrupt: Interrupt | None = None,
) -> list[RequestOutcome]:
    """Make the images of every request, those of one shape in one pipeline call.

    ``model`` and ``device`` as for :func:`generate_images`; ``max_images``
    (default ``$OSCAR_SD_MAX_BATCH_IMAGES``, 24) caps the images of one call.
    Returns one :class:`RequestOutcome` per request, in order; a request the
    model cannot run, a model that cannot load or a call that fails becomes
    that request's ``error``, so one bad request never fails the others.
    ``on_outcome`` hears each outcome as soon as its call ends. Whatever
    ``on_step`` (called after each step) or ``interrupt`` (called before each
    micro-batch, see :mod:`.microbatch`) raises stops everything and propagates
    unchanged.
    """
    outcomes: list[RequestOutcome | None] = [None] * len(requests)

    def settle(index: int, outcome: RequestOutcome) -> None:
        outcomes[index] = outcome
        if on_outcome is not None:
            on_outcome(index, outcome)

    try:
        loaded = load_pipeline(model, device)
        limit = max_images if max_images is not None else max_batch_images_from_env()
    except (ServiceError, ValueError) as exc:
        # A setting the operator got wrong (ValueError) is told as it is, not as a bug.
        failure = exc if isinstance(exc, ServiceError) else ConfigurationError(str(exc))
        for index, request in enumerate(requests):
            settle(index, RequestOutcome(request, error=failure))
        return [outcome for outcome in outcomes if outcome is not None]
    resolved: dict[int, GenerationRequest] = {}
    for index, request in enumerate(requests):
        try:
            resolved[index] = resolve_request(request, loaded.profile)
        except InvalidRequestError as exc:
            settle(index, RequestOutcome(request, error=exc))
    order = sorted(resolved)
    guidance_input = embeds_guidance(loaded)
    plan = plan_batches(
        [resolved[i] for i in order], limit, lambda r: shape_key(r, guidance_input)
    )
    for members in plan:
        indices = [order[member] for member in members]
        try:
            pictures = run_batch(loaded, [resolved[i] for i in indices], on_step, interrupt)
        except ServiceError as exc:
            for index in indices:
                settle(index, RequestOutcome(requests[index], error=exc))
            continue
        for index, made in zip(indices, pictures, strict=True):
            images = encode_images(loaded, resolved[index], made)
            settle(index, RequestOutcome(requests[index], images))
    return [outcome for outcome in outcomes if outcome is not None]


def generate_images(
    request: GenerationRequest,
    *,
    model: str | None = None,
    device: str | None = None,
    on_step: StepCallback | None = None,
    interrupt: Interrupt | None = None,
) -> list[GeneratedImage]:
    """Make the ``request.num_images`` images of ``request`` with ``model`` (default:
    ``$OSCAR_SD_MODEL``) on ``device`` (default: the GPU if any).

    Raises :class:`~oscar_sd.InvalidRequestError` for a request the model cannot
    run, :class:`.ModelLoadError` and :class:`.GenerationError`. Whatever
    ``on_step`` or ``interrupt`` raises stops the generation and propagates unchanged.
    """
    (outcome,) = generate_batch(
        [request], model=model, device=device, on_step=on_step, interrupt=interrupt
    )
    if outcome.error is not None:
        raise outcome.error
    return outcome.images


def encode_images(
    loaded: LoadedModel, request: GenerationRequest, pictures: list[Any]
) -> list[GeneratedImage]:
    """The PNGs of resolved ``request``'s ``pictures``, each carrying its parameters."""
    sampler = type(loaded.pipeline.scheduler).__name__
    images = []
    for index, picture in enumerate(pictures, start=1):
        seed = image_seed(request.seed, index)  # type: ignore[arg-type]
        parameters = parameters_text(request, seed, sampler, loaded.profile.label)
        png = encode_png(
            picture,
            {PARAMETERS_KEY: parameters, JSON_KEY: metadata_json(request, index, seed)},
        )
        images.append(GeneratedImage(index, seed, png, request, parameters))
    return images
