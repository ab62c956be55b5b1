"""Image to image through the page's API (gradio_client), locally with the tiny model."""

from __future__ import annotations

from pathlib import Path

import pytest
from gradio_client import handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from oscar_sd import GenerationRequest
from oscar_sd.service import generate_images
from tests.helpers import pixels
from tests.test_ui_local import SMALL, local_settings
from tests.ui_fixtures import client, png_metadata, running_app


def test_the_api_takes_a_start_image_and_a_strength(tmp_path: Path) -> None:
    start = tmp_path / "start.png"
    Image.new("RGB", (96, 64), (200, 40, 30)).save(start)
    with running_app(local_settings()) as app:
        api = client(app, tmp_path / "downloads")
        images, seed, status = api.predict(
            "a red fox", seed=7, randomize_seed=False, num_images=2,
            start_image=handle_file(str(start)), strength=0.5,
            api_name="/generate", **SMALL,
        )
        # A path typed as text is never read: only uploads are start images.
        with pytest.raises(AppError):
            api.predict("a red fox", start_image=str(start), api_name="/generate", **SMALL)
    assert seed == "7" and "2 images" in status
    parameters, info = png_metadata(images[0]["image"])
    assert "Denoising strength: 0.5" in parameters
    assert len(info["request"]["init_image_sha256"]) == 64
    # The pixels the worker makes for that start image and strength.
    expected = generate_images(
        GenerationRequest(prompt="a red fox", seed=7, width=64, height=64, steps=2,
                          num_images=2, init_image=start.read_bytes(), strength=0.5),
        model="tiny", device="cpu")
    made = [Path(image["image"]).read_bytes() for image in images]
    for mine, theirs in zip(made, expected, strict=True):
        assert (pixels(mine) == pixels(theirs.png)).all()
