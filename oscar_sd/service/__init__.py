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
:mod:`.tiny` (the download-free test model), :mod:`.generate` (requests → PNGs),
:mod:`.batch` (several requests in one pipeline call), :mod:`.microbatch`
(batch-invariant forwards), :mod:`.marker` (``<job>.started.json``),
:mod:`.metadata` (what each PNG carries), :mod:`.job` (input file → zip or
error object), :mod:`.errors` (error types and exit codes), :mod:`.download`
(weights into the image at build time); warm mode (``--warm``): :mod:`.warm`
(the long-running replica), :mod:`.claims` (claims by conditional PUT),
:mod:`.health` (``/health``), :mod:`.warm_config` (its environment).
"""

from .errors import GenerationError, ModelLoadError, ServiceError
from .generate import (
    GeneratedImage,
    RequestOutcome,
    StepCallback,
    generate_batch,
    generate_images,
    resolve_request,
)
from .job import JobOutcome, execute_job, read_request, run_job
from .marker import StartedMarker, write_started_marker
from .pipeline import (
    DEFAULT_MODEL,
    TINY_MODEL,
    LoadedModel,
    LoadTimings,
    ModelProfile,
    load_pipeline,
)

__all__ = [
    "DEFAULT_MODEL",
    "TINY_MODEL",
    "GeneratedImage",
    "GenerationError",
    "JobOutcome",
    "LoadTimings",
    "LoadedModel",
    "ModelLoadError",
    "ModelProfile",
    "RequestOutcome",
    "ServiceError",
    "StartedMarker",
    "StepCallback",
    "execute_job",
    "generate_batch",
    "generate_images",
    "load_pipeline",
    "read_request",
    "resolve_request",
    "run_job",
    "write_started_marker",
]
