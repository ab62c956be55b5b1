"""The seam between the front ends and where images are made.

The UI and the CLI hold a :class:`Backend` and never ask which one it is: the
OSCAR backend (MinIO uploads and bucket notifications) or the local backend
(the same service worker, in-process).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from ._models import GenerationRequest, GenerationResult, ProgressCallback


@runtime_checkable
class Backend(Protocol):
    """Anything that turns a request into images."""

    #: A short human description, shown on the page ("OSCAR cluster at ...").
    description: str

    async def generate(
        self, request: GenerationRequest, on_progress: ProgressCallback | None = None
    ) -> GenerationResult:
        """Make the images of ``request``; raise an :class:`OscarSDError` on failure."""
        ...

    async def aclose(self) -> None:
        """Release what the backend holds; pending ``generate`` calls are cancelled first."""
        ...
