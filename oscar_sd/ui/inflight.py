"""A run in flight when the app stopped reaches its owner's history when it lands.

Before a run's prompt goes to the cluster, :func:`noted` writes a note in the
owner's history (``oscar_sd/history/_pending.py``); the run's end here drops
it. When the app stops first, the note stays: the next time a process opens
that history (the owner signs in again, after the restart or on another
replica, or the page reloads its history), :func:`collect_pending` picks the
landed result up into the history (``oscar_sd/_collect.py``), or drops the
note once its run's deadline has long passed with nothing landed. The run's
input is marked too (``noted``), so the orphan sweep of any process spares its
objects for a week (``SweepPolicy.noted_grace``) while the owner stays away.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from .._backend import Backend
from .._choice import ModelChoice
from .._collect import collect_landed
from .._errors import JobFailedError, OscarSDError
from .._models import GenerationRequest, GenerationResult
from .._oscar import OscarSD
from ..history._pending import drop_pending, leave_pending, note_pending, pending_runs
from .sessions import Sessions, UserSession

log = logging.getLogger("oscar_sd.ui")

Generate = Callable[..., Awaitable[GenerationResult]]


@asynccontextmanager
async def noted(session: UserSession, backend: Backend) -> AsyncIterator[Generate]:
    """``backend.generate``, with the run noted in the owner's history while it runs."""
    store = session.store
    if store is None or not isinstance(backend, OscarSD):
        yield backend.generate
        return
    job_id = uuid.uuid4().hex
    ended = False

    async def generate(request: GenerationRequest, on_progress: Any = None) -> GenerationResult:
        nonlocal ended
        request = request.with_seed()  # the note holds the seed the run uses
        try:
            await note_pending(store, job_id, request, backend.service)
        except Exception as exc:  # the run goes on; only a restart would lose it
            log.warning("could not note a run in its history: %s", type(exc).__name__)
        try:
            result = await backend.generate(request, on_progress, job_id=job_id, noted=True)
        except OscarSDError:
            ended = True
            raise
        ended = True
        return result

    try:
        yield generate
    finally:
        # Cancelled (the app stopping, or Cancel): the note stays for the next process.
        if not ended:
            leave_pending(job_id)
        else:
            try:
                await drop_pending(store, job_id)
            except Exception as exc:
                log.warning("could not drop a run's note: %s", type(exc).__name__)


async def collect_pending(sessions: Sessions, session: UserSession, settled: float) -> int:
    """Runs noted in this history by a process that stopped: landed ones into the history.
    Returns how many came in."""
    store, backend = session.store, session.backend
    services = [b for b in (backend.backends.values() if isinstance(backend, ModelChoice)
                            else [backend]) if isinstance(b, OscarSD)]
    if store is None or not services:
        return 0
    came = 0
    for run in await pending_runs(store):
        if run.age < settled:
            continue  # in flight in a live process, most likely
        backend = next((b for b in services if b.service == run.service), services[0])
        try:
            result = await collect_landed(backend, run.job_id, run.request, settled=settled)
        except JobFailedError:
            await drop_pending(store, run.job_id)
            continue
        if result is None:
            if run.age > backend.timeout + settled:
                await drop_pending(store, run.job_id)  # its deadline passed long ago
            continue
        await sessions.keep(session, result)
        await drop_pending(store, run.job_id)
        came += 1
    if came:
        log.info("%d run(s) of an earlier app process came into their history", came)
    return came
