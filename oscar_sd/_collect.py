"""Picking up the result of a run that an earlier app process started and did not wait out.

:func:`collect_landed` looks, once, for what the job of ``job_id`` wrote to the
service's output folder: the images (downloaded, unpacked, returned as a
result, and the request's objects deleted), a failure report (its
:class:`JobFailedError`, objects deleted), or nothing yet (None). A result
younger than ``settled`` seconds is left alone: a live process waiting for it
(this one, or another replica) downloads and deletes a result within moments,
so only one that has sat there longer has nobody waiting.
"""

from __future__ import annotations

import time
from functools import partial

import anyio.to_thread

from ._errors import JobFailedError
from ._models import GenerationRequest, GenerationResult
from ._oscar import RESULT_SUFFIXES, OscarSD
from ._storage import storage_error
from ._unpack import unpack_result


async def collect_landed(
    sd: OscarSD, job_id: str, request: GenerationRequest, *, settled: float = 30.0
) -> GenerationResult | None:
    """The landed result of ``job_id``, if one has sat there ``settled`` seconds."""
    storage, out, inp = sd._storage, sd.output_path, sd.input_path
    try:
        aged = await anyio.to_thread.run_sync(storage.list_aged, out.bucket, out.key(job_id), 20)
    except Exception as exc:
        raise storage_error(exc, storage.endpoint) from None
    now = time.time()
    ages = {key: now - written for key, written in aged}
    landed = next(
        (out.key(job_id + s) for s in RESULT_SUFFIXES if out.key(job_id + s) in ages), None
    )
    if landed is None or ages[landed] < settled:
        return None
    try:
        data = await anyio.to_thread.run_sync(storage.get, out.bucket, landed)
    except Exception as exc:
        raise storage_error(exc, storage.endpoint) from None
    leftovers = list(ages)  # the result and the job's markers
    inputs = [inp.key(f"{job_id}.json"), inp.key(f"{job_id}.txt")]

    async def tidy() -> None:
        await anyio.to_thread.run_sync(storage.remove, out.bucket, leftovers)
        await anyio.to_thread.run_sync(storage.remove, inp.bucket, inputs)

    if landed.endswith(".error.json"):
        await tidy()
        raise JobFailedError.from_report(data, job_id)
    directory = sd.results_dir / job_id
    images = await anyio.to_thread.run_sync(partial(unpack_result, landed, data, directory))
    await tidy()
    return GenerationResult(images=images, request=request, job_id=job_id, directory=directory)
