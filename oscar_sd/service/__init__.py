"""The Stable Diffusion worker: the program that runs inside each OSCAR job.

It turns one input object into one output object (DESIGN.md, the app ↔ service
contract). The same code runs in-process in the local backend
(:class:`oscar_sd.LocalSD`): one code path for generating images.

Inside a job (``manifests/script.sh``)::

    INPUT_FILE_PATH=in/3f2a.json TMP_OUTPUT_DIR=out OSCAR_SD_MODEL=tiny \\
        python -m oscar_sd.service        # writes out/3f2a.zip

From Python:

>>> from pathlib import Path
>>> run_job(Path("in/3f2a.json"), Path("out"), model="tiny")     # doctest: +SKIP
PosixPath('out/3f2a.zip')
>>> from oscar_sd import GenerationRequest
>>> images = generate_images(GenerationRequest(prompt="a red fox", width=64, height=64),
...                          model="tiny")                     # doctest: +SKIP
>>> images[0].png[:4]                                          # doctest: +SKIP
b'\\x89PNG'

Modules, one idea each: :mod:`.pipeline` (which model, loading once),
:mod:`.tiny` (the download-free test model), :mod:`.generate` (request → PNGs),
:mod:`.metadata` (what each PNG carries), :mod:`.job` (input file → zip or
error object), :mod:`.errors` (error types and exit codes), :mod:`.download`
(weights into the image at build time).
"""

from .errors import GenerationError, ModelLoadError, ServiceError
from .generate import GeneratedImage, StepCallback, generate_images, resolve_request
from .job import JobOutcome, execute_job, read_request, run_job
from .pipeline import DEFAULT_MODEL, TINY_MODEL, LoadedModel, ModelProfile, load_pipeline

__all__ = [
    "DEFAULT_MODEL",
    "TINY_MODEL",
    "GeneratedImage",
    "GenerationError",
    "JobOutcome",
    "LoadedModel",
    "ModelLoadError",
    "ModelProfile",
    "ServiceError",
    "StepCallback",
    "execute_job",
    "generate_images",
    "load_pipeline",
    "read_request",
    "resolve_request",
    "run_job",
]
