"""Requests are validated with errors that name the field; results free their files."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from oscar_sd import GenerationRequest, GenerationResult, InvalidRequestError


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


# -- freeing a result's files -----------------------------------------------------


def a_result(tmp_path: Path) -> GenerationResult:
    directory = tmp_path / "job-1"
    directory.mkdir()
    images = [directory / f"{index}.png" for index in (1, 2)]
    for image in images:
        image.write_bytes(b"\x89PNG")
    return GenerationResult(images=images, request=GenerationRequest(prompt="a fox", seed=1),
                            job_id="job-1", directory=directory)


def test_cleanup_deletes_the_files_and_may_run_twice(tmp_path: Path) -> None:
    result = a_result(tmp_path)
    result.cleanup()
    assert not result.directory.exists()
    result.cleanup()


def test_a_with_block_frees_the_files_even_on_error(tmp_path: Path) -> None:
    result = a_result(tmp_path)
    with pytest.raises(RuntimeError), result as held:
        assert held is result and all(image.exists() for image in held.images)
        raise RuntimeError("the caller failed")
    assert not result.directory.exists()


@pytest.mark.anyio
async def test_an_async_with_block_frees_the_files_even_when_cancelled(tmp_path: Path) -> None:
    result = a_result(tmp_path)
    async with result as held:
        assert held.images[0].read_bytes() == b"\x89PNG"
    assert not result.directory.exists()

    (tmp_path / "again").mkdir()
    cancelled = a_result(tmp_path / "again")
    with anyio.fail_after(5), anyio.CancelScope() as scope:
        async with cancelled:
            scope.cancel()
            await anyio.sleep_forever()
    assert scope.cancelled_caught and not cancelled.directory.exists()


def test_every_public_name_resolves_and_has_a_home() -> None:
    # The names are imported on first use: a name added to __all__ without its
    # module in _HOMES would only fail when a user first touches it.
    import oscar_sd

    assert set(oscar_sd.__all__) == set(oscar_sd._HOMES)
    for name in oscar_sd.__all__:
        assert getattr(oscar_sd, name) is not None
