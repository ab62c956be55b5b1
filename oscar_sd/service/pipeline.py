"""Which model runs, with which defaults, and loading it once per process.

``OSCAR_SD_MODEL`` names the model:

- a Hugging Face hub id, by default ``stabilityai/sd-turbo``;
- a folder holding a diffusers pipeline (the service image bakes one in, so
  jobs never download weights);
- ``tiny``: a small randomly initialised pipeline (:mod:`.tiny`) that needs no
  download and makes noise, not pictures.

Each kind has the defaults it is made for, used when a request leaves ``steps``
or ``guidance_scale`` empty. A name containing ``turbo`` is a few-step model.

>>> loaded = load_pipeline("tiny")           # built once, then cached
>>> loaded.profile.default_steps, loaded.device
(2, 'cpu')

PyTorch and diffusers are imported by :func:`load_pipeline`, not by importing
this module, so a job can report what it costs (:class:`LoadTimings`) and write
its started marker before paying for it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ModelLoadError
from .microbatch import install_micro_batching, micro_batch_from_env

if TYPE_CHECKING:
    import torch

logger = logging.getLogger("oscar_sd.service")

DEFAULT_MODEL = "stabilityai/sd-turbo"
TINY_MODEL = "tiny"


@dataclass(frozen=True)
class ModelProfile:
    """What a model is called in the PNG metadata, and the settings it is made for."""

    #: The label written into each image ("Model: ..."): the hub id, "tiny" or the folder.
    label: str
    #: "turbo" (few-step, no guidance), "tiny" (random weights) or "sd" (a classic SD model).
    kind: str
    default_steps: int
    default_guidance: float
    #: The most steps a request may ask for; turbo models are trained for 1 to 4.
    max_steps: int = 150
    #: Image to image: the share of the start image redrawn when a request does not say.
    default_strength: float = 0.75


@dataclass(frozen=True)
class LoadTimings:
    """Where the seconds of loading a model went (the cold start of a job, minus Python)."""

    #: Importing PyTorch, diffusers and transformers (0 when already imported).
    imports: float = 0.0
    #: Reading the weights from disk into host memory (the tiny model: building it).
    weights: float = 0.0
    #: Moving the weights to the device (and choosing its attention kernels).
    to_device: float = 0.0

    @property
    def total(self) -> float:
        return self.imports + self.weights + self.to_device

    def describe(self) -> str:
        """``"imports 2.1 s, weights from disk 0.4 s, to cuda 0.3 s"`` for the log."""
        return (
            f"imports {self.imports:.2f} s, weights from disk {self.weights:.2f} s, "
            f"to the device {self.to_device:.2f} s"
        )


@dataclass(frozen=True)
class LoadedModel:
    """A pipeline ready to run, with where it runs and how long loading took."""

    pipeline: Any
    profile: ModelProfile
    device: str
    dtype: torch.dtype
    load_seconds: float
    timings: LoadTimings = field(default_factory=LoadTimings)
    #: Samples per UNet forward (see :mod:`.microbatch`); 0 = the whole batch.
    micro_batch: int = 0
    #: Held while the pipeline runs: its scheduler keeps per-call state, so two
    #: threads (two LocalSD instances, a test double's jobs) must take turns.
    run_lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)
    #: The image-to-image pipeline, built on first use from the same modules.
    _image_to_image: list[Any] = field(default_factory=list, repr=False, compare=False)

    def image_to_image(self) -> Any:
        """The image-to-image pipeline over this pipeline's own modules (no second copy of
        the weights; micro-batching included). Call it holding :attr:`run_lock`."""
        if not self._image_to_image:
            self._image_to_image.append(_image_to_image_of(self.pipeline))
        return self._image_to_image[0]


def model_from_env() -> str:
    """The model named by ``OSCAR_SD_MODEL``, or the default one."""
    return os.environ.get("OSCAR_SD_MODEL", "").strip() or DEFAULT_MODEL


def default_device() -> str:
    """``OSCAR_SD_DEVICE`` when set, else ``cuda`` when a GPU is visible, else ``cpu``."""
    chosen = os.environ.get("OSCAR_SD_DEVICE", "").strip()
    if chosen:
        return chosen
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def looks_like_folder(model: str) -> bool:
    """True when ``model`` is a path rather than a hub id ("org/name")."""
    return model.startswith(("/", "./", "../", "~")) or Path(model).expanduser().is_dir()


def profile_for(model: str) -> ModelProfile:
    """The defaults for ``model``, judged by its name."""
    label = os.environ.get("OSCAR_SD_MODEL_NAME", "").strip() or model
    if model == TINY_MODEL:
        return ModelProfile(label=label, kind="tiny", default_steps=2, default_guidance=0.0)
    if "turbo" in model.lower():
        return ModelProfile(
            label=label, kind="turbo", default_steps=1, default_guidance=0.0, max_steps=4,
            default_strength=0.5,
        )
    return ModelProfile(label=label, kind="sd", default_steps=25, default_guidance=7.5)


_cache: dict[tuple[str, str], LoadedModel] = {}
# One lock for all loads: two threads asking for the same model load it once.
_cache_lock = threading.Lock()


def load_pipeline(model: str | None = None, device: str | None = None) -> LoadedModel:
    """The pipeline for ``model`` on ``device``, loaded on first use and then kept.

    Raises :class:`~oscar_sd.service.errors.ModelLoadError` with a sentence that
    says what to change when the model cannot be loaded.
    """
    model = model or model_from_env()
    started = time.perf_counter()
    import torch  # noqa: F401  (timed here: choosing the device needs it)

    torch_seconds = time.perf_counter() - started
    device = device or default_device()
    key = (model, device)
    with _cache_lock:
        if key not in _cache:
            _cache[key] = _load(model, device, torch_seconds)
        return _cache[key]


def forget_pipelines() -> None:
    """Drop every cached pipeline (frees memory; the next use loads again)."""
    with _cache_lock:
        _cache.clear()


def _load(model: str, device: str, torch_seconds: float) -> LoadedModel:
    import torch

    profile = profile_for(model)
    started = time.perf_counter()

    # Half precision where the GPU makes it fast; CPUs compute float16 slowly or not at all.
    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    logger.info("Loading model %s on %s (%s)", profile.label, device, str(dtype).split(".")[-1])
    try:
        micro_batch = micro_batch_from_env()
        if model == TINY_MODEL:
            logger.warning(
                "Model 'tiny' has random weights: it makes noise, not pictures. "
                "Set OSCAR_SD_MODEL to a Stable Diffusion model for real images."
            )
            from .tiny import build_tiny_pipeline

            imported = time.perf_counter()
            pipeline = build_tiny_pipeline()
            if dtype != torch.float32:
                pipeline = pipeline.to(dtype=dtype)
        else:
            from diffusers import DiffusionPipeline

            imported = time.perf_counter()
            pipeline = _from_pretrained(DiffusionPipeline, model, dtype)
        read = time.perf_counter()
        pipeline = pipeline.to(device)
        if device.startswith("cuda") and hasattr(pipeline, "unet"):
            from diffusers.models.attention_processor import AttnProcessor2_0

            # PyTorch's fused scaled-dot-product attention (flash / memory-efficient kernels).
            pipeline.unet.set_attn_processor(AttnProcessor2_0())
        if device.startswith("cuda"):
            torch.cuda.synchronize()  # the copy is asynchronous: time it to its end
        moved = time.perf_counter()
    except ModelLoadError:
        raise
    except Exception as exc:
        logger.exception("Loading model %s failed", profile.label)
        raise ModelLoadError(
            f"The model {profile.label!r} could not be loaded on {device} ({_first_line(exc)}). "
            "Set OSCAR_SD_MODEL to a reachable hub id, a folder holding a diffusers "
            "pipeline, or 'tiny'."
        ) from exc
    pipeline.set_progress_bar_config(disable=True)
    install_micro_batching(pipeline, micro_batch)
    timings = LoadTimings(
        imports=torch_seconds + imported - started, weights=read - imported, to_device=moved - read
    )
    seconds = torch_seconds + moved - started
    logger.info("Model %s loaded in %.2f s (%s)", profile.label, seconds, timings.describe())
    return LoadedModel(pipeline, profile, device, dtype, seconds, timings, micro_batch)


def _image_to_image_of(pipeline: Any) -> Any:
    from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionPipeline

    if isinstance(pipeline, StableDiffusionPipeline):
        # The class diffusers pairs with it, over the same components: one scheduler,
        # one UNet, one VAE (taking turns under run_lock).
        components = dict(pipeline.components)
        variant = StableDiffusionImg2ImgPipeline(
            **components,
            requires_safety_checker=bool(pipeline.config.get("requires_safety_checker", False))
            and components.get("safety_checker") is not None,
        )
    else:  # SDXL and other families: diffusers maps the pipeline to its image-to-image kin
        from diffusers import AutoPipelineForImage2Image

        variant = AutoPipelineForImage2Image.from_pipe(pipeline)
    variant.set_progress_bar_config(disable=True)
    return variant


def _from_pretrained(pipeline_class: Any, model: str, dtype: torch.dtype) -> Any:
    # DiffusionPipeline reads model_index.json and imports only that pipeline's
    # class; AutoPipelineForText2Image imports every pipeline it could map to (~1 s).
    if looks_like_folder(model):
        folder = Path(model).expanduser()
        if not (folder / "model_index.json").is_file():
            raise ModelLoadError(
                f"The model folder {folder} does not exist or holds no diffusers pipeline "
                "(no model_index.json). Set OSCAR_SD_MODEL to a folder made with "
                "save_pretrained or snapshot_download, a hub id, or 'tiny'."
            )
        source = str(folder)
    else:
        source = model
    return pipeline_class.from_pretrained(source, dtype=dtype)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    reason = text[0] if text else type(exc).__name__
    return reason if len(reason) <= 300 else reason[:297] + "..."
