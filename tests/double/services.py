"""Ready-made service handlers: what a job runs inside the double.

A handler is ``handler(input_file, output_dir) -> None``, the Python face of
OSCAR's script contract (``$INPUT_FILE_PATH`` in, files in ``$TMP_OUTPUT_DIR``
out).  The fake generator honours our app <-> service contract (DESIGN.md):
``<job>.json`` or ``<job>.txt`` in, ``<job>.zip`` of ``1.png … N.png`` out, or
``<job>.error.json`` on failure.  Its pixels are a pure function of
(prompt, seed, index), so a test can tell whose image is whose.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image, PngImagePlugin

from . import pod

Handler = Callable[[Path, Path], "str | None"]

IMAGE_SIZE = 64  # whatever size is asked for: small keeps a thousand jobs fast
DEFAULT_NUM_IMAGES = 6
DEFAULTS: dict[str, Any] = {
    "prompt": "",
    "negative_prompt": "",
    "seed": 0,
    "steps": 25,
    "guidance_scale": 7.5,
    "width": 512,
    "height": 512,
    "num_images": DEFAULT_NUM_IMAGES,
}


class GenerationFailed(RuntimeError):
    """Raised by the fake generator for the prompt "FAIL" (after writing its error file)."""


def read_request(input_file: Path) -> dict[str, Any]:
    """The contract input: ``<job>.json`` with the parameters, or a text file with the prompt."""
    text = input_file.read_text(encoding="utf-8")
    if input_file.suffix == ".json":
        return {**DEFAULTS, **json.loads(text)}
    return {**DEFAULTS, "prompt": text.strip()}


def job_id(input_file: Path) -> str:
    """``<job>`` of ``<job>.json`` / ``<job>.txt``: the correlation handle."""
    return input_file.name.split(".", 1)[0]


def pixels(prompt: str, seed: int, index: int) -> bytes:
    """The RGB bytes of image ``index``: a pure function of its inputs."""
    material = json.dumps([prompt, int(seed), int(index)]).encode()
    return hashlib.shake_256(material).digest(IMAGE_SIZE * IMAGE_SIZE * 3)


def expected_png_fingerprint(prompt: str, seed: int, index: int) -> str:
    """What :func:`png_fingerprint` gives for image ``index`` of (prompt, seed)."""
    return hashlib.sha256(pixels(prompt, seed, index)).hexdigest()


def png_fingerprint(png: bytes) -> str:
    """Fingerprint of a PNG's pixels (not its bytes: text chunks differ per request)."""
    with Image.open(io.BytesIO(png)) as image:
        return hashlib.sha256(image.convert("RGB").tobytes()).hexdigest()


def a1111_parameters(request: dict[str, Any]) -> str:
    """The A1111-style ``parameters`` text chunk (no empty negative prompt line, as the
    service's ``oscar_sd/service/metadata.py``)."""
    negative = request["negative_prompt"]
    return (
        f"{request['prompt']}\n" + (f"Negative prompt: {negative}\n" if negative else "") +
        f"Steps: {request['steps']}, Sampler: fake, CFG scale: {request['guidance_scale']}, "
        f"Seed: {request['seed']}, Size: {request['width']}x{request['height']}, "
        "Model: oscar-sd-double"
    )


def render_png(request: dict[str, Any], index: int) -> bytes:
    image = Image.frombytes(
        "RGB", (IMAGE_SIZE, IMAGE_SIZE), pixels(request["prompt"], request["seed"], index))
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", a1111_parameters(request))
    # As the worker does: a start image is not copied into every PNG made from it.
    described = {key: value for key, value in request.items() if key != "init_image"}
    info.add_text("oscar-sd", json.dumps({**described, "index": index}))
    out = io.BytesIO()
    image.save(out, format="PNG", pnginfo=info, compress_level=0)  # noise won't compress
    return out.getvalue()


def write_error(output_dir: Path, job: str, message: str, kind: str) -> Path:
    path = output_dir / f"{job}.error.json"
    path.write_text(json.dumps({"error": message, "type": kind}), encoding="utf-8")
    return path


def fake_generator(input_file: Path, output_dir: Path) -> None:
    """Our contract: ``<job>.zip`` holding ``1.png … N.png`` (N = num_images)."""
    job = job_id(input_file)
    request = read_request(input_file)
    if request["prompt"] == "FAIL":
        write_error(output_dir, job, "the prompt asked to fail", "GenerationFailed")
        raise GenerationFailed("the prompt asked to fail")
    count = int(request.get("num_images") or DEFAULT_NUM_IMAGES)
    archive = output_dir / f"{job}.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED) as zf:
        for index in range(1, count + 1):
            zf.writestr(f"{index}.png", render_png(request, index))


def upstream_example(input_file: Path, output_dir: Path) -> None:
    """grycap/oscar examples/stable-diffusion: text prompt in, ``<input name>.png`` out."""
    request = read_request(input_file)
    (output_dir / f"{input_file.name}.png").write_bytes(render_png(request, 1))


def error_writer(message: str, kind: str = "ServiceError") -> Handler:
    """A handler that always fails the contract way: it writes ``<job>.error.json``."""

    def handler(input_file: Path, output_dir: Path) -> None:
        write_error(output_dir, job_id(input_file), message, kind)

    return handler


def started_then(generate: Handler = fake_generator) -> Handler:
    """A job that says it started, as the real worker does, then runs ``generate``.

    The worker (oscar_sd/service/marker.py) writes ``<job>.started.json`` straight
    to the output folder with the MinIO keys OSCAR mounts into the pod, naming
    the OSCAR job from ``$JOB_UUID``, before it generates; faas-supervisor
    uploads only the result. So does this handler, through the same code, finding
    its store in the pod's mounts and environment as the worker does.
    """
    from oscar_sd.service.marker import OutputStore, StartedMarker, write_started_marker

    def handler(input_file: Path, output_dir: Path) -> str | None:
        job = pod.current_job()
        if job is None:
            raise RuntimeError("started_then runs inside a double's job only")
        store = OutputStore.from_job_environment(job.worker_env)
        if store is None:
            raise RuntimeError("the pod's mounts describe no output store")
        written = write_started_marker(job_id(input_file), store=store,
                                       marker=StartedMarker.now(job.env["JOB_UUID"]))
        return f"started marker: {written}\n{generate(input_file, output_dir) or ''}"

    return handler
