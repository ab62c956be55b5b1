"""The service worker: input object in, zip of PNGs or error object out (issue #3).

Everything runs the real diffusers pipeline with the tiny random model on the CPU.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from oscar_sd import GenerationRequest, InvalidRequestError
from oscar_sd.service import (
    GenerationError,
    execute_job,
    generate_images,
    load_pipeline,
    read_request,
    resolve_request,
    run_job,
)
from oscar_sd.service import generate as generate_module
from oscar_sd.service import job as job_module
from oscar_sd.service.metadata import parameters_text
from oscar_sd.service.pipeline import LoadedModel, profile_for
from tests.helpers import pixels, small_request

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def tiny_model() -> LoadedModel:
    """Build the tiny pipeline once for the whole session (the service caches it)."""
    return load_pipeline("tiny", "cpu")


def write_input(folder: Path, name: str, content: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(content, encoding="utf-8")
    return path


def zip_members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


# --- input object to output object ------------------------------------------------


def test_json_input_gives_a_zip_of_numbered_pngs(tmp_path: Path) -> None:
    payload = small_request(seed=11, num_images=4, width=64, height=96).to_payload()
    input_file = write_input(tmp_path / "in", "3f2a.json", json.dumps(payload))
    out = tmp_path / "out"
    out.mkdir()

    outcome = execute_job(input_file, out, model="tiny", device="cpu")

    assert outcome.exit_code == 0 and outcome.error_type is None
    assert outcome.output == out / "3f2a.zip"
    assert sorted(p.name for p in out.iterdir()) == ["3f2a.zip"]
    members = zip_members(outcome.output)
    assert sorted(members) == ["1.png", "2.png", "3.png", "4.png"]
    for png in members.values():
        with Image.open(io.BytesIO(png)) as image:
            assert image.format == "PNG" and image.size == (64, 96)


def test_txt_input_holds_only_the_prompt(tmp_path: Path) -> None:
    input_file = write_input(tmp_path / "in", "job7.txt", "  a lighthouse at dusk\n")
    assert read_request(input_file) == GenerationRequest(prompt="a lighthouse at dusk")

    out = tmp_path / "out"
    out.mkdir()
    zip_path = run_job(input_file, out, model="tiny", device="cpu")

    assert zip_path == out / "job7.zip"
    members = zip_members(zip_path)
    # The contract's defaults: six images of 512x512.
    assert sorted(members) == [f"{i}.png" for i in range(1, 7)]
    with Image.open(io.BytesIO(members["6.png"])) as image:
        assert image.size == (512, 512)
        assert image.text["parameters"].startswith("a lighthouse at dusk\n")


# --- determinism and seeds --------------------------------------------------------


def test_same_seed_gives_identical_images_on_cpu() -> None:
    first = generate_images(small_request(seed=1234), model="tiny", device="cpu")
    second = generate_images(small_request(seed=1234), model="tiny", device="cpu")
    assert [image.png for image in first] == [image.png for image in second]
    # And the images of one batch differ from each other (one generator per image).
    assert np.abs(pixels(first[0].png) - pixels(first[1].png)).max() > 0


def test_different_seeds_give_different_images() -> None:
    first = generate_images(small_request(seed=1), model="tiny", device="cpu")
    second = generate_images(small_request(seed=2), model="tiny", device="cpu")
    for a, b in zip(first, second, strict=True):
        assert np.abs(pixels(a.png) - pixels(b.png)).mean() > 1.0


def test_image_i_alone_is_remade_from_its_own_seed() -> None:
    batch = generate_images(small_request(seed=500, num_images=3), model="tiny", device="cpu")
    third = batch[2]
    assert third.seed == 502
    alone = generate_images(small_request(seed=502, num_images=1), model="tiny", device="cpu")
    # Fixed-size micro-batches (service/microbatch.py): a batch of 3 and a batch of 1
    # run the same kernels on the same shapes, so the pixels are the same.
    assert np.array_equal(pixels(third.png), pixels(alone[0].png))


def test_threads_sharing_the_cached_pipeline_each_get_their_own_images() -> None:
    # The cluster double runs jobs in threads, and two LocalSDs share the cache.
    requests = [small_request(seed=seed) for seed in (100, 200, 300)]
    alone = [generate_images(request, model="tiny", device="cpu") for request in requests]
    together: dict[int, list[bytes]] = {}

    def run(i: int) -> None:
        images = generate_images(requests[i], model="tiny", device="cpu")
        together[i] = [image.png for image in images]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert together == {i: [image.png for image in alone[i]] for i in range(len(requests))}


def test_random_seed_is_drawn_and_reported() -> None:
    images = generate_images(small_request(seed=None, num_images=2), model="tiny", device="cpu")
    seed = images[0].request.seed
    assert seed is not None
    assert [image.seed for image in images] == [seed, (seed + 1) % 2**32]


# --- metadata ---------------------------------------------------------------------


def test_png_chunks_carry_parameters_and_request() -> None:
    request = small_request(
        prompt="a red fox, ünïcode", negative_prompt="blurry", seed=42, guidance_scale=3.5
    )
    images = generate_images(request, model="tiny", device="cpu")

    with Image.open(io.BytesIO(images[1].png)) as image:
        parameters = image.text["parameters"]
        data = json.loads(image.text["oscar-sd"])

    assert parameters == (
        "a red fox, ünïcode\n"
        "Negative prompt: blurry\n"
        "Steps: 2, Sampler: EulerDiscreteScheduler, CFG scale: 3.5, Seed: 43, "
        "Size: 64x64, Model: tiny"
    )
    assert data["index"] == 2 and data["seed"] == 43
    # The request as run: seed, the model's default steps, the asked guidance.
    assert GenerationRequest(**data["request"]) == request.model_copy(update={"steps": 2})


def test_no_empty_negative_prompt_line_as_in_a1111() -> None:
    request = small_request(prompt="a red fox", negative_prompt="", seed=7).model_copy(
        update={"steps": 2, "guidance_scale": 0.0})
    text = parameters_text(request, 7, "Euler", "tiny")
    assert text == ("a red fox\nSteps: 2, Sampler: Euler, CFG scale: 0.0, Seed: 7, "
                    "Size: 64x64, Model: tiny")
    assert "Negative prompt" not in text


# --- model defaults ---------------------------------------------------------------


def test_model_defaults_follow_the_model() -> None:
    bare = GenerationRequest(prompt="x", seed=1)
    turbo = resolve_request(bare, profile_for("stabilityai/sd-turbo"))
    assert (turbo.steps, turbo.guidance_scale) == (1, 0.0)
    classic = resolve_request(bare, profile_for("runwayml/stable-diffusion-v1-5"))
    assert (classic.steps, classic.guidance_scale) == (25, 7.5)
    tiny = resolve_request(bare, profile_for("tiny"))
    assert (tiny.steps, tiny.guidance_scale) == (2, 0.0)


def test_turbo_refuses_more_than_four_steps() -> None:
    with pytest.raises(InvalidRequestError, match="between 1 and 4") as caught:
        resolve_request(GenerationRequest(prompt="x", steps=8), profile_for("stabilityai/sd-turbo"))
    assert caught.value.field == "steps"


# --- failures ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content", "words"),
    [
        ("empty.json", json.dumps({"prompt": "   "}), "prompt"),
        ("wide.json", json.dumps({"prompt": "x", "width": 100}), "width"),
        ("broken.json", '{"prompt": "x",', "not valid JSON"),
        ("list.json", '["a prompt"]', "JSON object"),
        ("extra.json", json.dumps({"prompt": "x", "colour": "red"}), "colour"),
        ("empty.txt", "\n", "prompt"),
        ("photo.jpg", "x", ".json"),
    ],
)
def test_bad_request_writes_an_error_object(
    tmp_path: Path, name: str, content: str, words: str
) -> None:
    input_file = write_input(tmp_path / "in", name, content)
    out = tmp_path / "out"
    out.mkdir()

    outcome = execute_job(input_file, out, model="tiny", device="cpu")

    job = name.rsplit(".", 1)[0]
    assert outcome.exit_code == 2
    assert outcome.output == out / f"{job}.error.json"
    assert [p.name for p in out.iterdir()] == [f"{job}.error.json"]
    error = json.loads(outcome.output.read_text())
    assert error["type"] == "InvalidRequest"
    assert words in error["error"]


def test_model_that_cannot_load_writes_an_error_object(tmp_path: Path) -> None:
    input_file = write_input(tmp_path / "in", "j1.json", json.dumps({"prompt": "x"}))
    out = tmp_path / "out"
    out.mkdir()

    outcome = execute_job(input_file, out, model="/nonexistent", device="cpu")

    assert outcome.exit_code == 3
    error = json.loads((out / "j1.error.json").read_text())
    assert error["type"] == "ModelLoadError"
    assert "/nonexistent" in error["error"] and "OSCAR_SD_MODEL" in error["error"]


def test_out_of_memory_is_a_generation_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_model: LoadedModel
) -> None:
    def exhausted(**kwargs: object) -> None:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    broken = LoadedModel(exhausted, tiny_model.profile, "cuda", torch.float16, 0.0)
    monkeypatch.setattr(generate_module, "load_pipeline", lambda model, device: broken)
    input_file = write_input(tmp_path / "in", "j2.json", json.dumps(small_request().to_payload()))

    outcome = execute_job(input_file, tmp_path, model="tiny")

    assert outcome.exit_code == 4
    error = json.loads(outcome.output.read_text())
    assert error["type"] == "GenerationError"
    assert "fewer images or a smaller size" in error["error"]
    with pytest.raises(GenerationError):
        generate_images(small_request(), model="tiny")


def test_unexpected_failure_reports_no_details(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "AKIA-not-for-the-error-object"

    def leaky(*args: object, **kwargs: object) -> None:
        raise RuntimeError(f"connection to minio with key {secret} failed")

    monkeypatch.setattr(job_module, "generate_images", leaky)
    input_file = write_input(tmp_path / "in", "j3.txt", "a prompt")

    outcome = execute_job(input_file, tmp_path, model="tiny")

    assert outcome.exit_code == 1
    text = outcome.output.read_text()
    assert secret not in text
    assert json.loads(text)["type"] == "InternalError"


# --- the command, as the OSCAR job runs it ---------------------------------------


def run_worker(env_changes: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("INPUT_FILE_PATH", "TMP_OUTPUT_DIR")}
    env.update(env_changes)
    return subprocess.run(
        [sys.executable, "-m", "oscar_sd.service"],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=240,
    )


def test_python_m_oscar_sd_service_follows_the_env_contract(tmp_path: Path) -> None:
    payload = small_request(seed=9, num_images=2).to_payload()
    input_file = write_input(tmp_path / "in", "cafe01.json", json.dumps(payload))
    out = tmp_path / "out"
    out.mkdir()

    done = run_worker(
        {"INPUT_FILE_PATH": str(input_file), "TMP_OUTPUT_DIR": str(out), "OSCAR_SD_MODEL": "tiny"},
        tmp_path,
    )

    assert done.returncode == 0, done.stderr
    assert sorted(zip_members(out / "cafe01.zip")) == ["1.png", "2.png"]
    assert "noise, not pictures" in done.stderr
    assert "loaded in" in done.stderr
    # The subprocess makes the same images as this process: one code path.
    here = generate_images(small_request(seed=9, num_images=2), model="tiny", device="cpu")
    assert zip_members(out / "cafe01.zip")["2.png"] == here[1].png


def test_python_m_oscar_sd_service_exit_codes_on_failure(tmp_path: Path) -> None:
    input_file = write_input(tmp_path / "in", "j9.json", json.dumps({"prompt": "x"}))
    out = tmp_path / "out"
    out.mkdir()

    done = run_worker(
        {
            "INPUT_FILE_PATH": str(input_file),
            "TMP_OUTPUT_DIR": str(out),
            "OSCAR_SD_MODEL": "/nonexistent",
        },
        tmp_path,
    )
    assert done.returncode == 3
    assert json.loads((out / "j9.error.json").read_text())["type"] == "ModelLoadError"

    missing = run_worker({"OSCAR_SD_MODEL": "tiny"}, tmp_path)
    assert missing.returncode == 5
    assert "INPUT_FILE_PATH and TMP_OUTPUT_DIR not set" in missing.stderr


def test_help_names_the_modes_and_settings_and_exits_0(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from oscar_sd.service.__main__ import main

    assert main(["--help"]) == 0
    said = capsys.readouterr().out
    assert "--warm" in said and "usage: python -m oscar_sd.service" in said
    for setting in ("INPUT_FILE_PATH", "TMP_OUTPUT_DIR", "OSCAR_SD_MODEL", "OSCAR_SD_DEVICE",
                    "OSCAR_SD_INPUT_PATH", "OSCAR_SD_CLAIM_TTL", "OSCAR_SD_MAX_BATCH_IMAGES"):
        assert setting in said, setting
