"""Several requests in one pipeline call (issue 9): each request's images as when it runs alone.

The real tiny pipeline on the CPU; pixels are compared after PNG decoding.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from oscar_sd import GenerationRequest
from oscar_sd.service import (
    GenerationError,
    LoadedModel,
    RequestOutcome,
    generate_batch,
    generate_images,
    load_pipeline,
)
from oscar_sd.service import batch as batch_module
from oscar_sd.service.batch import ShapeKey, plan_batches, shape_key
from oscar_sd.service.microbatch import (
    DEFAULT_MICRO_BATCH,
    _chunked,
    _decoder_output,
    _unet_output,
)
from tests.helpers import pixels, small_request


@pytest.fixture(scope="module")
def tiny() -> LoadedModel:
    return load_pipeline("tiny", "cpu")


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[list[GenerationRequest]]]:
    """The requests of each pipeline call, in order (the real calls still run)."""
    seen: list[list[GenerationRequest]] = []
    real = batch_module.run_batch

    def spy(loaded: LoadedModel, requests: list[GenerationRequest], *args: Any) -> Any:
        seen.append(list(requests))
        return real(loaded, requests, *args)

    monkeypatch.setattr("oscar_sd.service.generate.run_batch", spy)
    yield seen


MIXED = [
    # Guidance off (tiny's default 0.0, and 0.5 <= 1): one call for these three.
    small_request(prompt="a red fox", seed=1, num_images=6),
    small_request(prompt="an owl at night", seed=50, num_images=3, guidance_scale=0.5,
                  negative_prompt="blurry"),
    small_request(prompt="a cat", seed=9, num_images=5),
    # Guidance on at 4.0, with and without a negative prompt: one call.
    small_request(prompt="a dog", seed=7, num_images=4, guidance_scale=4.0,
                  negative_prompt="ugly"),
    small_request(prompt="the sea", seed=3, num_images=2, guidance_scale=4.0),
    # Another size: its own call.
    small_request(prompt="a ship", seed=11, num_images=2, width=96),
]


def test_batched_requests_make_the_same_pixels_as_alone(
    tiny: LoadedModel, calls: list[list[GenerationRequest]]
) -> None:
    alone = [generate_images(request, model="tiny", device="cpu") for request in MIXED]
    calls.clear()

    outcomes = generate_batch(MIXED, model="tiny", device="cpu")

    assert [[r.prompt for r in call] for call in calls] == [
        ["a red fox", "an owl at night", "a cat"],
        ["a dog", "the sea"],
        ["a ship"],
    ]
    assert [outcome.request for outcome in outcomes] == MIXED
    for outcome, lone in zip(outcomes, alone, strict=True):
        assert outcome.error is None
        assert [image.seed for image in outcome.images] == [image.seed for image in lone]
        for batched, single in zip(outcome.images, lone, strict=True):
            assert np.array_equal(pixels(batched.png), pixels(single.png)), (
                f"{outcome.request.prompt!r} image {batched.index} differs: max "
                f"{np.abs(pixels(batched.png) - pixels(single.png)).max()}"
            )
            # Metadata too: the whole PNG is the same file.
            assert batched.png == single.png


def test_every_unet_forward_sees_the_same_micro_batch(
    tiny: LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What makes the pixels batch-invariant: the kernels always see the same shapes.
    unet_sizes: list[int] = []
    vae_sizes: list[int] = []
    unet_forward = tiny.pipeline.unet.forward.unchunked
    vae_decode = tiny.pipeline.vae.decode.unchunked

    def record_unet(sample: Any, *args: Any, **kwargs: Any) -> Any:
        unet_sizes.append(sample.shape[0])
        return unet_forward(sample, *args, **kwargs)

    def record_vae(sample: Any, *args: Any, **kwargs: Any) -> Any:
        vae_sizes.append(sample.shape[0])
        return vae_decode(sample, *args, **kwargs)

    monkeypatch.setattr(tiny.pipeline.unet, "forward",
                        _chunked(record_unet, tiny.micro_batch, _unet_output))
    monkeypatch.setattr(tiny.pipeline.vae, "decode", _chunked(record_vae, 1, _decoder_output))

    generate_batch(MIXED[:3], model="tiny", device="cpu")  # 14 images, 2 steps, no guidance

    assert tiny.micro_batch == DEFAULT_MICRO_BATCH == 4
    assert set(unet_sizes) == {4} and len(unet_sizes) == 2 * 4  # ceil(14 / 4) per step
    assert vae_sizes == [1] * 14


def test_calls_hold_at_most_max_images_and_keep_arrival_order() -> None:
    requests = [small_request(seed=i, num_images=6) for i in range(5)]
    keyed = lambda r: shape_key(r.model_copy(update={"steps": 2}))  # noqa: E731

    assert plan_batches(requests, 24, keyed) == [[0, 1, 2, 3], [4]]
    assert plan_batches(requests, 12, keyed) == [[0, 1], [2, 3], [4]]
    # Another shape in between does not hold up the first one's call.
    mixed = [requests[0], small_request(width=128), requests[1], requests[2]]
    assert plan_batches(mixed, 12, keyed) == [[0, 2], [1], [3]]
    # A request with more images than the cap still runs, alone.
    assert plan_batches([requests[0]], 4, keyed) == [[0]]


def test_guidance_on_shares_a_call_only_with_the_same_scale() -> None:
    def key(guidance: float | None) -> ShapeKey:
        return shape_key(small_request(steps=2, guidance_scale=guidance))

    assert key(None) == key(0.0) == key(1.0) == key(0.5)  # guidance off: scale unused
    assert key(4.0) != key(0.0)
    assert key(4.0) != key(7.5)
    assert key(4.0) == key(4.0)
    # A UNet that embeds the scale (LCM) must match it even below 1.
    unguided = small_request(steps=2, guidance_scale=0.5)
    assert shape_key(unguided, True) != shape_key(unguided.model_copy(
        update={"guidance_scale": 0.0}), True)


def test_a_failed_call_fails_only_its_own_requests(
    tiny: LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = batch_module.run_batch
    heard: list[tuple[int, str]] = []

    def fail_wide(loaded: LoadedModel, requests: list[GenerationRequest], *args: Any) -> Any:
        heard.append((-1, f"call {[r.prompt for r in requests]}"))
        if requests[0].width == 96:
            raise GenerationError("The cpu ran out of memory making 2 image(s)")
        return real(loaded, requests, *args)

    monkeypatch.setattr("oscar_sd.service.generate.run_batch", fail_wide)

    def hear(index: int, outcome: RequestOutcome) -> None:
        heard.append((index, "error" if outcome.error else f"{len(outcome.images)} images"))

    requests = [MIXED[5], MIXED[0], MIXED[2]]
    outcomes = generate_batch(requests, model="tiny", device="cpu", on_outcome=hear)

    assert isinstance(outcomes[0].error, GenerationError) and outcomes[0].images == []
    assert [len(o.images) for o in outcomes[1:]] == [6, 5]
    # Each outcome is told as soon as its call ends, before the next call starts.
    assert heard == [
        (-1, "call ['a ship']"),
        (0, "error"),
        (-1, "call ['a red fox', 'a cat']"),
        (1, "6 images"),
        (2, "5 images"),
    ]


def test_a_model_that_cannot_load_fails_every_request() -> None:
    requests = [small_request(seed=1), small_request(seed=2)]
    outcomes = generate_batch(requests, model="/nonexistent/model", device="cpu")
    assert [type(o.error).__name__ for o in outcomes] == ["ModelLoadError"] * 2


def test_random_seeds_are_drawn_per_request(tiny: LoadedModel) -> None:
    requests = [GenerationRequest(prompt="x", width=64, height=64, num_images=2)] * 2
    first, second = generate_batch(requests, model="tiny", device="cpu")
    seeds = [first.images[0].seed, second.images[0].seed]
    assert seeds[0] != seeds[1]
    assert [image.seed for image in first.images] == [seeds[0], (seeds[0] + 1) % 2**32]


def test_settings_that_are_not_numbers_are_refused_with_what_to_do(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from oscar_sd.service.batch import max_batch_images_from_env
    from oscar_sd.service.microbatch import micro_batch_from_env

    monkeypatch.setenv("OSCAR_SD_MAX_BATCH_IMAGES", "lots")
    with pytest.raises(ValueError, match="unset it for 24"):
        max_batch_images_from_env()
    monkeypatch.setenv("OSCAR_SD_MICRO_BATCH", "-1")
    with pytest.raises(ValueError, match="unset it for 4"):
        micro_batch_from_env()
    monkeypatch.setenv("OSCAR_SD_MICRO_BATCH", "0")
    assert micro_batch_from_env() == 0
    # A bad cap fails the requests with the sentence, not as an unexplained bug.
    monkeypatch.setenv("OSCAR_SD_MAX_BATCH_IMAGES", "0")
    (outcome,) = generate_batch([small_request()], model="tiny", device="cpu")
    assert "OSCAR_SD_MAX_BATCH_IMAGES='0'" in str(outcome.error)
    assert type(outcome.error).__name__ == "ConfigurationError"
