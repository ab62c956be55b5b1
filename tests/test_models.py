"""Requests are validated with errors that name the field."""

from __future__ import annotations

import pytest

from oscar_sd import GenerationRequest, InvalidRequestError


def test_defaults_and_stripping() -> None:
    request = GenerationRequest(prompt="  a red fox  ")
    assert request.prompt == "a red fox"
    assert request.num_images == 6
    assert (request.width, request.height) == (512, 512)
    assert request.seed is None


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"prompt": "   "}, "prompt"),
        ({"prompt": "x" * 2001}, "prompt"),
        ({"prompt": "a", "width": 100}, "width"),
        ({"prompt": "a", "height": 4096}, "height"),
        ({"prompt": "a", "num_images": 9}, "num_images"),
        ({"prompt": "a", "num_images": 0}, "num_images"),
        ({"prompt": "a", "steps": 0}, "steps"),
        ({"prompt": "a", "guidance_scale": -1}, "guidance_scale"),
        ({"prompt": "a", "seed": -5}, "seed"),
        ({"prompt": "a", "colour": "red"}, "colour"),
        ({}, "prompt"),
    ],
)
def test_invalid_values_name_their_field(fields: dict, field: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        GenerationRequest(**fields)
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")


def test_empty_prompt_says_what_to_do() -> None:
    with pytest.raises(ValueError, match="type what the images should show"):
        GenerationRequest(prompt="")


def test_with_seed_draws_once_and_keeps_a_given_seed() -> None:
    drawn = GenerationRequest(prompt="a").with_seed()
    assert drawn.seed is not None
    assert drawn.with_seed().seed == drawn.seed
    assert GenerationRequest(prompt="a", seed=7).with_seed().seed == 7


def test_payload_is_the_contract() -> None:
    payload = GenerationRequest(prompt="a", seed=1).to_payload()
    assert set(payload) == {
        "prompt",
        "negative_prompt",
        "seed",
        "steps",
        "guidance_scale",
        "width",
        "height",
        "num_images",
    }
