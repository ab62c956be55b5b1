"""Image to image: the start image inside the request, the same pixels on every path."""

from __future__ import annotations

import base64
import io
import json
import zipfile
from pathlib import Path

import anyio
import pytest
from PIL import Image

from oscar_sd import GenerationRequest, InvalidRequestError, LocalSD
from oscar_sd.service import generate_images, load_pipeline
from oscar_sd.service.generate import generate_batch
from oscar_sd.service.job import execute_job
from oscar_sd.service.metadata import read_metadata
from tests.helpers import pixels
from tests.warm_fixtures import WARM, ResultLog, ThreadReplica, warm_cluster, warm_settings


@pytest.fixture(scope="module", autouse=True)
def tiny_model() -> None:
    load_pipeline("tiny", "cpu")


def start_png(colour: tuple[int, int, int] = (200, 40, 30), size: tuple[int, int] = (80, 48),
              kind: str = "PNG") -> bytes:
    image = Image.new("RGB", size, colour)
    image.paste((20, 90, 200), (10, 10, 40, 30))  # something for the model to keep
    buffer = io.BytesIO()
    image.save(buffer, format=kind)
    return buffer.getvalue()


def start_request(**fields: object) -> GenerationRequest:
    values: dict[str, object] = {"prompt": "a red fox", "width": 64, "height": 64,
                                 "num_images": 2, "seed": 11, "steps": 4, "strength": 0.5,
                                 "init_image": start_png()}
    values.update(fields)
    return GenerationRequest(**values)


def test_the_start_image_travels_inside_the_request_as_base64_png() -> None:
    jpeg = start_png(kind="JPEG")
    request = GenerationRequest(prompt="a fox", init_image=jpeg, strength=0.4)
    payload = request.to_payload()
    assert payload["strength"] == 0.4
    png = base64.b64decode(payload["init_image"])
    assert png.startswith(b"\x89PNG") and request.start_image == png
    # The same from base64 text, a data: URL or a file.
    assert GenerationRequest(prompt="a fox", init_image=payload["init_image"]).start_image == png
    url = "data:image/png;base64," + payload["init_image"]
    assert GenerationRequest(prompt="a fox", init_image=url).start_image == png
    assert "init_image" not in repr(request)  # a blob of base64 in no log line
    # Text to image sends neither field, so services that predate image to image take it.
    assert set(GenerationRequest(prompt="a fox").to_payload()) == {
        "prompt", "negative_prompt", "seed", "steps", "guidance_scale", "width", "height",
        "num_images"}


@pytest.mark.parametrize(("fields", "field", "said"), [
    ({"init_image": b"not an image"}, "init_image", "not an image"),
    ({"init_image": "@@@"}, "init_image", "base64"),
    ({"init_image": b"\0" * (5 * 2**20)}, "init_image", "the limit is 4 MiB"),
    ({"strength": 0.5}, "strength", "give a start image"),
    ({"init_image": start_png(), "strength": 0}, "strength", "above 0"),
])
def test_a_bad_start_image_or_strength_is_refused_by_name(
    fields: dict[str, object], field: str, said: str
) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        GenerationRequest(prompt="a fox", **fields)
    assert caught.value.field == field and said in caught.value.problem


def test_too_few_steps_for_the_strength_is_an_error_that_says_so() -> None:
    with pytest.raises(InvalidRequestError, match="steps x strength"):
        generate_images(start_request(steps=1, strength=0.5), model="tiny", device="cpu")


def test_the_start_image_shapes_the_images_and_its_digest_is_in_their_parameters() -> None:
    made = generate_images(start_request(), model="tiny", device="cpu")
    other = generate_images(start_request(init_image=start_png((10, 200, 10))),
                            model="tiny", device="cpu")
    assert (pixels(made[0].png) != pixels(other[0].png)).any()
    assert "Denoising strength: 0.5" in made[0].parameters
    described = read_metadata(made[0].png)["request"]
    assert "init_image" not in described and len(described["init_image_sha256"]) == 64


def test_steps_run_are_steps_times_strength() -> None:
    steps: list[tuple[int, int]] = []
    generate_images(start_request(steps=8, strength=0.5, num_images=1), model="tiny",
                    device="cpu", on_step=lambda step, total: steps.append((step, total)))
    assert steps == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_the_local_backend_and_the_worker_make_the_same_pixels(tmp_path: Path) -> None:
    request = start_request()
    job_input = tmp_path / "in" / "job1.json"
    job_input.parent.mkdir()
    job_input.write_text(json.dumps(request.to_payload()))
    (tmp_path / "out").mkdir()
    outcome = execute_job(job_input, tmp_path / "out", model="tiny", device="cpu")
    with zipfile.ZipFile(outcome.output) as archive:
        from_job = [archive.read(f"{i}.png") for i in (1, 2)]

    async def local() -> list[bytes]:
        async with LocalSD(model="tiny", results_dir=tmp_path / "local", device="cpu") as sd:
            result = await sd.generate(request)
            return [path.read_bytes() for path in result.images]

    from_local = anyio.run(local)
    assert len(from_local) == len(from_job) == 2
    for mine, theirs in zip(from_local, from_job, strict=True):
        assert (pixels(mine) == pixels(theirs)).all()


def test_batched_with_others_it_makes_the_pixels_it_makes_alone() -> None:
    mine = start_request()
    mate = start_request(prompt="an owl", seed=3, num_images=3, init_image=start_png((9, 9, 9)))
    stronger = start_request(prompt="a boat", strength=0.75)
    text = GenerationRequest(prompt="a fox", width=64, height=64, num_images=1, seed=2, steps=4)
    outcomes = generate_batch([mate, mine, stronger, text], model="tiny", device="cpu")
    alone = generate_images(mine, model="tiny", device="cpu")
    assert [len(outcome.images) for outcome in outcomes] == [3, 2, 2, 1]
    for batched, single in zip(outcomes[1].images, alone, strict=True):
        assert (pixels(batched.png) == pixels(single.png)).all()


def test_a_warm_replica_batches_only_same_strength_and_gives_the_lone_pixels() -> None:
    requests = [
        start_request(),
        start_request(prompt="an owl", seed=3, num_images=1, init_image=start_png((9, 9, 9))),
        start_request(prompt="a boat", strength=0.75, num_images=1),
        GenerationRequest(prompt="a fox", width=64, height=64, num_images=1, seed=2, steps=4),
    ]
    with warm_cluster() as double:
        for n, request in enumerate(requests):
            double.put_object(WARM, f"in/job{n}.json", json.dumps(request.to_payload()).encode())
        log = ResultLog(double)
        with ThreadReplica(warm_settings(double, "replica-a")) as replica:
            for n in range(len(requests)):
                assert log.wait_for(f"out/job{n}.zip", 120), f"no result for job{n}"
        zips = [double.get_object(WARM, f"out/job{n}.zip") for n in range(len(requests))]
    # The two of strength 0.5 shared a call; strength 0.75 and text to image ran apart.
    assert sorted(replica.worker.stats.batches) == [1, 1, 2]
    for request, data in zip(requests, zips, strict=True):
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            batched = [archive.read(f"{i}.png") for i in range(1, request.num_images + 1)]
        alone = generate_images(request, model="tiny", device="cpu")
        for mine, theirs in zip(batched, alone, strict=True):
            assert (pixels(mine) == pixels(theirs.png)).all()
