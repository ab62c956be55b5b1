"""What the page's events do: generate, pick from history, forget a closed tab.

The generate handler is ``async`` and awaits the library; while it waits,
each progress report of the backend becomes Gradio progress (stage, step,
place in line, seconds so far). Failures become :class:`gr.Error` with a
sentence the person can act on.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio
import gradio as gr

from .._backend import Backend
from .._errors import (
    AuthenticationError,
    InvalidRequestError,
    JobFailedError,
    OscarSDError,
    SignInExpired,
)
from .._models import GenerationResult, Progress
from .form import DEFAULT_SIZE, FIELD_LABELS, HistoryEntry, build_request
from .sessions import SESSION_EXPIRED, SessionExpired, Sessions, UserSession, tab_key

log = logging.getLogger("oscar_sd.ui")
T = TypeVar("T")

UNEXPECTED = "Something went wrong on the server (it is logged). Try again in a moment."

#: A tab's earlier runs, newest first, as its ``gr.State`` holds them.
History = list[dict[str, Any]]


def message_for(exc: BaseException) -> str:
    """The sentence shown for an error."""
    if isinstance(exc, InvalidRequestError):
        return f"{FIELD_LABELS.get(exc.field, exc.field)} {exc.problem}."
    if isinstance(exc, SessionExpired) and exc.reason:
        return exc.reason
    if isinstance(exc, SignInExpired):
        return str(exc)
    if isinstance(exc, (SessionExpired, AuthenticationError)):
        return SESSION_EXPIRED
    if isinstance(exc, JobFailedError):
        # The library's message carries the service's own words.
        said = str(exc).rstrip(".")
        return f"{said}. Try again; if it ran out of memory, ask for fewer or smaller images."
    if isinstance(exc, OscarSDError):
        return str(exc)  # the library's messages are written for people and hold no secrets
    return UNEXPECTED


def _shown(message: str) -> gr.Error:
    """A gr.Error for ``message``; Gradio renders it as HTML, so it is escaped first."""
    return gr.Error(html.escape(message, quote=False), print_exception=False)


def describe(progress: Progress) -> str:
    """One line for the progress overlay: what happens now, and for how long."""
    return f"{progress.message} · {progress.elapsed:.0f} s"


def status_line(result: GenerationResult) -> str:
    count = len(result.images)
    seconds = result.timings.total
    took = f" in {seconds:.1f} s" if seconds else ""
    model = f" · {result.model}" if result.model else ""
    return f"{count} image{'s' * (count != 1)}{took} · seed {result.request.seed}{model}"


class Handlers:
    """The page's event handlers, bound to the app's sessions."""

    def __init__(self, sessions: Sessions, shared_backend: Callable[[], Backend] | None) -> None:
        self._sessions = sessions
        # Without login (local mode), each tab gets a session on the shared backend.
        self._shared_backend = shared_backend

    async def generate(
        self,
        prompt: str,
        negative_prompt: str = "",
        seed: float | None = None,
        randomize_seed: bool = True,
        steps: float | None = None,
        guidance_scale: float | None = None,
        size: str = DEFAULT_SIZE,
        num_images: float = 6,
        history: History | None = None,
        request: gr.Request | None = None,
        progress: gr.Progress = gr.Progress(),  # noqa: B008 (Gradio's documented idiom)
    ) -> tuple[list[str], int | None, str, History]:
        """Make the images the form asks for; returns gallery, seed used, status, history.

        The defaults are the API's: ``client.predict("a red fox", api_name="/generate")``.
        Gradio fills ``history`` (a ``gr.State``), ``request`` and ``progress``.
        """
        history = history or []
        if request is None:
            raise _shown(SESSION_EXPIRED)
        try:
            generation = build_request(
                prompt,
                negative_prompt,
                seed,
                randomize_seed,
                steps,
                guidance_scale,
                size,
                num_images,
            )
            session = await self._session_of(request)
        except (InvalidRequestError, SessionExpired) as exc:
            raise _shown(message_for(exc)) from None

        def on_progress(report: Progress) -> None:
            if report.step is not None and report.total_steps:
                progress((report.step, report.total_steps), desc=describe(report), unit="steps")
            else:
                progress(None, desc=describe(report))

        progress(None, desc="Sending your request")
        try:
            if session.token is not None:  # renewed now if it has under 60 s left
                await session.token.fresh()
            async with self._sessions.using(session) as backend:
                result = await cancellable(backend.generate, generation, on_progress)
        except AuthenticationError as exc:
            log.info("the backend refused the session's credentials; closing the session")
            said = message_for(exc)
            await self._sessions.close(session.key, "credentials refused", tell=said)
            raise _shown(said) from None
        except (OscarSDError, SessionExpired) as exc:
            log.warning("generation failed: %s: %s", type(exc).__name__, exc)
            raise _shown(message_for(exc)) from None
        except Exception:
            log.exception("generation failed unexpectedly")
            raise _shown(UNEXPECTED) from None

        if self._sessions.get(session.key) is not session:
            # Logged out (or the tab closed) while this ran: nobody may see these images.
            await anyio.to_thread.run_sync(result.cleanup)
            raise _shown(SESSION_EXPIRED)
        result = await self._sessions.keep(session, request.session_hash or "", result)
        log.info("generated %d images in %.1f s", len(result.images), result.timings.total)
        entry = HistoryEntry.of(result)
        return (
            list(entry.images),
            result.request.seed,
            status_line(result),
            [entry.to_state(), *history],
        )

    def choose_from_history(self, history: History, selected: gr.SelectData) -> tuple[Any, ...]:
        """Put a history entry's parameters back in the form, and its images in the gallery."""
        entry = HistoryEntry.from_state(history[selected.index])
        status = f"From history · seed {entry.seed} · {entry.model or 'parameters restored'}"
        return (*entry.form_values(), list(entry.images), entry.seed, status)

    async def forget_tab(self, request: gr.Request) -> None:
        """A tab closed: its images go (and without login, its whole session)."""
        tab = request.session_hash or ""
        if request.username:
            await self._sessions.forget_tab(request.username, tab)
        else:
            await self._sessions.close(tab_key(tab), "tab closed")

    async def _session_of(self, request: gr.Request) -> UserSession:
        if request.username:
            return self._sessions.require(request.username)
        if self._shared_backend is None:  # every route needs a login then; be safe anyway
            raise SessionExpired("no user")
        key = tab_key(request.session_hash or "")
        return self._sessions.get(key) or await self._sessions.open(
            key, self._shared_backend(), owns_backend=False
        )


async def cancellable(function: Callable[..., Awaitable[T]], *args: Any) -> T:
    """Await ``function(*args)`` in a task group, so that Cancel reaches it wherever it waits.

    Gradio's Cancel is a plain asyncio cancellation of the handler's task; an
    anyio task group turns it into a cancellation of its scope, which work in
    a worker thread hears too (the local model stops at its next step).
    """
    outcome: list[T] = []
    failure: list[Exception] = []

    async def run() -> None:
        try:
            outcome.append(await function(*args))
        except Exception as exc:  # re-raised below as itself, not in an ExceptionGroup
            failure.append(exc)

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(run)
    if failure:
        raise failure[0]
    return outcome[0]


def history_gallery(history: History) -> list[tuple[str, str]]:
    """The history strip: the first image of each earlier run, newest first."""
    entries = [HistoryEntry.from_state(data) for data in history]
    return [(entry.images[0], entry.caption) for entry in entries if entry.images]
