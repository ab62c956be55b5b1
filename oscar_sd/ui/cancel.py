"""Gradio's Cancel button, carried to wherever a run waits."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio

T = TypeVar("T")


async def cancellable(
    function: Callable[..., Awaitable[T]],
    *args: Any,
    alongside: Callable[[], Awaitable[None]] | None = None,
) -> T:
    """Await ``function(*args)`` in a task group, so that Cancel reaches it wherever it waits.

    Gradio's Cancel is a plain asyncio cancellation of the handler's task; an
    anyio task group turns it into a cancellation of its scope, which work in
    a worker thread hears too (the local model stops at its next step).
    ``alongside`` runs while ``function`` does, and is stopped when it ends.
    """
    outcome: list[T] = []
    failure: list[Exception] = []

    async with anyio.create_task_group() as tasks:

        async def run() -> None:
            try:
                outcome.append(await function(*args))
            except Exception as exc:  # re-raised below as itself, not in an ExceptionGroup
                failure.append(exc)
            finally:
                tasks.cancel_scope.cancel()  # stops ``alongside``

        if alongside is not None:
            tasks.start_soon(alongside)
        tasks.start_soon(run)
    if failure:
        raise failure[0]
    return outcome[0]
