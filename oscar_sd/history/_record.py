"""One finished run as the history keeps it: what was asked, what came out, when.

The record is a small JSON object stored beside the run's images
(``runs/<run id>/run.json``); it is written last, so a run whose record is
there is complete. The images are one object, ``runs/<run id>/images.pack``:
the PNG files one after the other, each found by the (offset, length) the
record gives it (``packed``), so keeping a run costs two uploads, not one
per image and the record. Runs kept before the pack have ``1.png`` … ``N.png``
beside the record and no ``packed``. The PNGs themselves carry their full parameters too
(``oscar_sd/service/metadata.py``): the record is what the page needs to
list the history without opening every image.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from .._models import GenerationResult

#: Where the runs live inside a history's storage.
RUNS = "runs/"
RECORD = "run.json"
PACK = "images.pack"


def new_run_id() -> str:
    """A run's id: sortable by time (oldest first), and unguessable."""
    return f"{time.time_ns():020d}-{secrets.token_hex(8)}"


def run_prefix(run_id: str) -> str:
    return f"{RUNS}{run_id}/"


def is_run_id(text: str) -> bool:
    """True for a string :func:`new_run_id` could have made (no path tricks)."""
    stamp, _, token = text.partition("-")
    return len(stamp) == 20 and stamp.isdigit() and len(token) == 16 and all(
        c in "0123456789abcdef" for c in token
    )


@dataclass(frozen=True)
class RunRecord:
    """One run of the history: its parameters and the names of its images."""

    run_id: str
    created: float  # Unix time
    prompt: str
    negative_prompt: str
    seed: int | None
    steps: int | None
    guidance_scale: float | None
    width: int
    height: int
    num_images: int
    model: str | None
    images: tuple[str, ...] = field(default_factory=tuple)  # "1.png", ...
    size: int = 0  # bytes of all images
    #: Each image's (name, offset, length) in the run's pack; empty: one object each.
    packed: tuple[tuple[str, int, int], ...] = ()

    @classmethod
    def of(cls, result: GenerationResult, run_id: str, size: int,
           packed: tuple[tuple[str, int, int], ...] = ()) -> RunRecord:
        request = result.request
        return cls(
            run_id=run_id,
            created=time.time(),
            prompt=request.prompt,
            negative_prompt=request.negative_prompt,
            seed=request.seed,
            steps=request.steps,
            guidance_scale=request.guidance_scale,
            width=request.width,
            height=request.height,
            num_images=request.num_images,
            model=result.model,
            images=tuple(image.name for image in result.images),
            size=size,
            packed=packed,
        )

    def to_json(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def from_json(cls, data: bytes) -> RunRecord:
        fields: dict[str, Any] = json.loads(data)
        fields["images"] = tuple(fields.get("images") or ())
        fields["packed"] = tuple((str(name), int(offset), int(length))
                                 for name, offset, length in fields.get("packed") or ())
        known = {name: fields[name] for name in cls.__dataclass_fields__ if name in fields}
        return cls(**known)

    def key(self, name: str) -> str:
        """The storage key of one of this run's files."""
        return run_prefix(self.run_id) + name

    def where(self, name: str) -> tuple[str, tuple[int, int] | None]:
        """Where image ``name`` is stored: its object's key, and its (offset, length)
        in it when packed (None: the whole object)."""
        for packed_name, offset, length in self.packed:
            if packed_name == name:
                return self.key(PACK), (offset, length)
        return self.key(name), None

    @property
    def keys(self) -> list[str]:
        """Every object of the run, its record last."""
        files = [self.key(PACK)] if self.packed else [self.key(name) for name in self.images]
        return [*files, self.key(RECORD)]
