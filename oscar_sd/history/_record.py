"""One finished run as the history keeps it: what was asked, what came out, when.

A run is one object, ``runs/<run id>/run.pack``: a short header (:data:`MAGIC`
and the record's length), the record as JSON, then the PNG files one after
the other, each found by the (offset, length) the record gives it (``packed``,
counted from the end of the record). Keeping a run is one upload, and a run is
there whole or not at all. Reading a record is one ranged GET of the pack's
start (:func:`record_of_pack`).

Runs kept before the pack are ``runs/<run id>/1.png`` … ``N.png`` and
``runs/<run id>/run.json`` (the record, written last, no ``packed``): still
read, shared and deleted. The PNGs carry their full parameters too
(``oscar_sd/service/metadata.py``): the record is what the page needs to list
the history without opening every image.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from .._models import GenerationResult

#: Where the runs live inside a history's storage.
RUNS = "runs/"
#: A run kept before the pack: its record, beside 1.png … N.png.
RECORD = "run.json"
#: A run: header, record and images in one object.
PACK = "run.pack"
#: A pack's first bytes; the record's length (8 bytes, big-endian) follows.
MAGIC = b"oscar-sd"
HEADER = len(MAGIC) + 8
#: How much of a pack's start one GET reads for its record (most records fit).
RECORD_READ = 16 * 1024


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
    #: Each image's (name, offset, length) in the run's pack, counted from the end of
    #: the record; empty: a run kept one file an image.
    packed: tuple[tuple[str, int, int], ...] = ()
    #: Where the images start in the pack (known once packed or read; not stored).
    images_at: int = field(default=0, compare=False)

    @classmethod
    def of(cls, result: GenerationResult, run_id: str, size: int = 0) -> RunRecord:
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
        )

    def to_json(self) -> bytes:
        fields = asdict(self)
        del fields["images_at"]
        return json.dumps(fields).encode()

    @classmethod
    def from_json(cls, data: bytes) -> RunRecord:
        fields: dict[str, Any] = json.loads(data)
        fields["images"] = tuple(fields.get("images") or ())
        fields["packed"] = tuple((str(name), int(offset), int(length))
                                 for name, offset, length in fields.get("packed") or ())
        known = {name: fields[name] for name in cls.__dataclass_fields__
                 if name in fields and name != "images_at"}
        return cls(**known)

    def key(self, name: str) -> str:
        """The storage key of one of this run's files."""
        return run_prefix(self.run_id) + name

    def where(self, name: str) -> tuple[str, tuple[int, int] | None]:
        """Where image ``name`` is stored: its object's key, and its (offset, length)
        in it when packed (None: the whole object)."""
        for packed_name, offset, length in self.packed:
            if packed_name == name:
                return self.key(PACK), (self.images_at + offset, length)
        return self.key(name), None

    @property
    def keys(self) -> list[str]:
        """Every object of the run (a run kept one file an image: its record last)."""
        if self.packed:
            return [self.key(PACK)]
        return [*(self.key(name) for name in self.images), self.key(RECORD)]


def pack(record: RunRecord, images: list[tuple[str, bytes]]) -> tuple[RunRecord, bytes]:
    """The run as one object: header, ``record`` (with each image's range), images."""
    packed, offset = [], 0
    for name, data in images:
        packed.append((name, offset, len(data)))
        offset += len(data)
    record = replace(record, packed=tuple(packed), size=offset)
    text = record.to_json()
    head = MAGIC + len(text).to_bytes(8, "big")
    return replace(record, images_at=HEADER + len(text)), b"".join(
        [head, text, *(data for _, data in images)])


def record_of_pack(start: bytes, read: Callable[[int, int], bytes]) -> RunRecord:
    """The record of a pack whose first bytes are ``start``; ``read(offset, length)``
    reads the rest of a record longer than that. ValueError for anything else."""
    if len(start) < HEADER or not start.startswith(MAGIC):
        raise ValueError("not a run pack")
    length = int.from_bytes(start[len(MAGIC):HEADER], "big")
    if not 0 < length <= 1024 * 1024:
        raise ValueError("a run pack's record length is out of bounds")
    text = start[HEADER:HEADER + length]
    if len(text) < length:
        text = read(HEADER, length)
    return replace(RunRecord.from_json(text), images_at=HEADER + length)
