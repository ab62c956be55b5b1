"""Image to image and the model choice through the page's API (gradio_client)."""

from __future__ import annotations

from pathlib import Path

import pytest
from gradio_client import handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from oscar_sd import GenerationRequest, ModelChoice
from oscar_sd.service import generate_images
from tests.conftest import ADMIN
from tests.double import ClusterDouble
from tests.helpers import pixels
from tests.test_ui_local import SMALL, local_settings
from tests.ui_fixtures import client, cluster_settings, png_metadata, running_app


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


def test_the_page_offers_the_services_by_model_and_sends_each_request_to_the_chosen(
    cluster: ClusterDouble, tmp_path: Path
) -> None:
    # Named as the manifests name them: the label, beside the folder of the weights.
    for name, model in (("sd-quality", "runwayml/stable-diffusion-v1-5"),
                        ("sd-fast", "stabilityai/sd-turbo")):
        cluster.add_service(name, input_path=f"{name}/in", output_path=f"{name}/out",
                            environment={"variables": {"OSCAR_SD_MODEL": f"/opt/models/{model}",
                                                       "OSCAR_SD_MODEL_NAME": model}})
    # A service this login may not use (here: one that does not exist) is left out.
    settings = cluster_settings(cluster.oscar_endpoint, service="sd-fast,sd-quality,sd-gone")
    with running_app(settings) as app:
        api = client(app, tmp_path / "downloads", auth=ADMIN)
        _, _, status = api.predict("a red fox", model="runwayml/stable-diffusion-v1-5",
                                   num_images=1, api_name="/generate")
        assert "runwayml/stable-diffusion-v1-5" in status
        assert len(cluster.jobs("sd-quality")) == 1 and not cluster.jobs("sd-fast")
        _, _, status = api.predict("a red fox", num_images=1, api_name="/generate")
        assert "stabilityai/sd-turbo" in status  # the first listed is the default
        assert len(cluster.jobs("sd-fast")) == 1
        with pytest.raises(AppError, match="not offered"):
            api.predict("a red fox", model="sd-gone", api_name="/generate")
        (session,) = app.sessions.of_account(ADMIN[0])
        assert isinstance(session.backend, ModelChoice)
        assert session.backend.models == ["stabilityai/sd-turbo", "runwayml/stable-diffusion-v1-5"]


def test_locally_the_models_that_can_load_are_offered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from oscar_sd._choice import local_models
    from oscar_sd.service.tiny import build_tiny_pipeline

    # This machine's Hugging Face cache is not the test's business.
    monkeypatch.setattr("oscar_sd._choice._cached_hub_pipelines", lambda: [])
    folder = tmp_path / "models"
    build_tiny_pipeline().save_pretrained(folder / "my-tiny-copy")
    (folder / "not-a-model").mkdir()
    saved = str(folder / "my-tiny-copy")
    assert local_models("tiny", folder) == ["tiny", saved]
    with running_app(local_settings(models_dir=str(folder))) as app:
        api = client(app, tmp_path / "downloads")
        _, _, status = api.predict("a red fox", model=saved, num_images=1,
                                   api_name="/generate", **SMALL)
        assert saved in status
        assert app.local_choice is not None and app.local_choice.models == ["tiny", saved]
