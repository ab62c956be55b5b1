"""A model choice: several backends, each named by the model it runs.

A cluster may run several Stable Diffusion services (sd-turbo for speed, an SD
1.5 or SDXL-class model for quality, per-job or warm): :class:`ModelChoice`
holds one backend per service (an :class:`~oscar_sd.OscarSD` each) and sends
each request to the one chosen. Locally it holds one
:class:`~oscar_sd.LocalSD` per model that can load (:func:`local_models`).

>>> choice = ModelChoice({"stabilityai/sd-turbo": turbo, "sd-1.5": classic})  # doctest: +SKIP
>>> await choice.generate(request, model="sd-1.5")                            # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ._backend import Backend
from ._errors import InvalidRequestError
from ._models import GenerationRequest, GenerationResult, ProgressCallback

logger = logging.getLogger("oscar_sd")

TINY = "tiny"


class ModelChoice:
    """Backends by model name; the first is the default. Implements :class:`Backend`."""

    def __init__(self, backends: dict[str, Backend]) -> None:
        if not backends:
            raise ValueError("a model choice needs at least one backend")
        self.backends = dict(backends)

    @property
    def models(self) -> list[str]:
        """The names offered, the default first."""
        return list(self.backends)

    @property
    def description(self) -> str:
        more = len(self.backends) - 1
        return self._first.description + (f" (and {more} more model{'s' * (more != 1)})"
                                    if more else "")

    def pick(self, model: str | None) -> Backend:
        """The backend of ``model`` (empty: the default); InvalidRequestError names the choices."""
        if not model:
            return self._first
        try:
            return self.backends[model]
        except KeyError:
            raise InvalidRequestError(
                "model", f"{model!r} is not offered here; choose one of: {', '.join(self.backends)}"
            ) from None

    async def generate(
        self, request: GenerationRequest, on_progress: ProgressCallback | None = None,
        model: str | None = None,
    ) -> GenerationResult:
        """Make ``request``'s images with ``model`` (default: the first)."""
        return await self.pick(model).generate(request, on_progress)

    async def aclose(self) -> None:
        for backend in self.backends.values():
            await backend.aclose()

    # What the app asks of a cluster login, answered by the default backend (every
    # backend of one login has the same identity on the same cluster).

    async def history(self, budget: Any = None) -> Any:
        """The identity's history (:meth:`OscarSD.history`)."""
        return await self._first.history(budget)  # type: ignore[attr-defined]

    @property
    def oidc_groups(self) -> tuple[str, ...]:
        return tuple(getattr(self._first, "oidc_groups", ()))

    def page_opened(self) -> None:
        """Someone opened the page: each warm-on-demand backend starts its service."""
        for backend in self.backends.values():
            opened = getattr(backend, "page_opened", None)
            if opened is not None:
                opened()

    @property
    def _first(self) -> Backend:
        return next(iter(self.backends.values()))


def named_by_model(backends: Iterable[tuple[str, str, Any]]) -> dict[str, Any]:
    """``(model, service, backend)`` triples keyed by model; a model two services run
    is told apart by its service: ``"stabilityai/sd-turbo (stable-diffusion-warm)"``."""
    triples = list(backends)
    counts: dict[str, int] = {}
    for model, _, _ in triples:
        counts[model] = counts.get(model, 0) + 1
    return {(model if counts[model] == 1 else f"{model} ({service})"): backend
            for model, service, backend in triples}


def local_models(configured: str, folder: str | Path | None = None) -> list[str]:
    """The models this computer can load: ``configured`` first, then the diffusers
    pipelines in ``folder`` (one sub-folder each), those in the Hugging Face cache,
    and ``tiny``."""
    found = [configured]
    if folder:
        root = Path(folder).expanduser()
        if root.is_dir():
            found += sorted(str(path) for path in root.iterdir()
                            if (path / "model_index.json").is_file())
    found += _cached_hub_pipelines()
    found.append(TINY)
    unique: list[str] = []
    for model in found:
        if model not in unique:
            unique.append(model)
    return unique


def _cached_hub_pipelines() -> list[str]:
    """Hub repositories in the local cache that hold a diffusers pipeline."""
    try:
        from huggingface_hub import scan_cache_dir

        cache = scan_cache_dir()
    except Exception:  # no cache yet, or one it cannot read: nothing cached
        return []
    models = []
    for repo in cache.repos:
        if repo.repo_type != "model":
            continue
        if any(file.file_name == "model_index.json"
               for revision in repo.revisions for file in revision.files):
            models.append(repo.repo_id)
    return sorted(models)
