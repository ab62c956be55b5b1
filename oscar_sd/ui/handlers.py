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
from .._models import GenerationResult
from .form import DEFAULT_SIZE, FIELD_LABELS, FieldValue, HistoryEntry, build_request
from .progress import StageDisplay
from .sessions import SESSION_EXPIRED, SessionExpired, Sessions, UserSession, tab_key

log = logging.getLogger("oscar_sd.ui")
T = TypeVar("T")

UNEXPECTED = "Something went wrong on the server (it is logged). Try again in a moment."

#: How many tabs' last errors are kept at most (each is shown, then dropped).
MAX_KEPT_ERRORS = 10_000

#: A tab's earlier runs, newest first, as its ``gr.State`` holds them.
History = list[dict[str, Any]]


#: The service's error types (the ``type`` of its error object) and what the person can do.
ADVICE = {
    # The service refused the request itself: the same again fails the same way.
    "InvalidRequest": "Change the request and try again.",
    "ModelLoadError": "The service could not load its model: tell the cluster's administrator.",
}
OUT_OF_MEMORY = "It ran out of memory: ask for fewer or smaller images."
TRY_AGAIN = "Try again in a moment."


def advice_for(exc: JobFailedError) -> str:
    """What a person can do about a failed job, by its cause."""
    said = str(exc).lower()
    if "out of memory" in said or "outofmemory" in said:
        return OUT_OF_MEMORY
    return ADVICE.get(exc.error_type or "", TRY_AGAIN)


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
        return f"{said}. {advice_for(exc)}"
    if isinstance(exc, OscarSDError):
        return str(exc)  # the library's messages are written for people and hold no secrets
    return UNEXPECTED


def _shown(message: str) -> gr.Error:
    """A gr.Error for ``message``; Gradio renders it as HTML, so it is escaped first."""
    return gr.Error(html.escape(message, quote=False), print_exception=False)


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
        # Each tab's last error, until its status line has shown it (see last_error).
        self._errors: dict[str, str] = {}

    async def generate(
        self,
        prompt: str,
        negative_prompt: str = "",
        seed: FieldValue = None,
        randomize_seed: bool = True,
        steps: FieldValue = None,
        guidance_scale: FieldValue = None,
        size: str = DEFAULT_SIZE,
        num_images: float = 6,
        history: History | None = None,
        request: gr.Request | None = None,
        progress: gr.Progress = gr.Progress(),  # noqa: B008 (Gradio's documented idiom)
    ) -> tuple[list[str], str, str, History]:
        """Make the images the form asks for; returns gallery, seed used, status, history.

        The defaults are the API's: ``client.predict("a red fox", api_name="/generate")``.
        Gradio fills ``history`` (a ``gr.State``), ``request`` and ``progress``.
        """
        history = history or []
        if request is None:
            raise _shown(SESSION_EXPIRED)
        tab = request.session_hash or ""
        self._errors.pop(tab, None)
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
            raise self._failed(tab, message_for(exc)) from None

        display = StageDisplay(progress)
        try:
            if session.token is not None:  # renewed now if it has under 60 s left
                await session.token.fresh()
            async with self._sessions.using(session) as backend:
                result = await cancellable(
                    backend.generate, generation, display, alongside=display.keep_counting
                )
        except AuthenticationError as exc:
            log.info("the backend refused the session's credentials; closing the session")
            said = message_for(exc)
            await self._sessions.close(session.key, "credentials refused", tell=said)
            raise self._failed(tab, said) from None
        except (OscarSDError, SessionExpired) as exc:
            log.warning("generation failed: %s: %s", type(exc).__name__, exc)
            raise self._failed(tab, message_for(exc)) from None
        except Exception:
            log.exception("generation failed unexpectedly")
            raise self._failed(tab, UNEXPECTED) from None

        if self._sessions.get(session.key) is not session:
            # Logged out (or the tab closed) while this ran: nobody may see these images.
            await anyio.to_thread.run_sync(result.cleanup)
            raise self._failed(tab, SESSION_EXPIRED)
        result = await self._sessions.keep(session, tab, result)
        log.info("generated %d images in %.1f s", len(result.images), result.timings.total)
        entry = HistoryEntry.of(result)
        return (
            list(entry.images),
            str(result.request.seed),
            status_line(result),
            [entry.to_state(), *history],
        )

    def _failed(self, tab: str, message: str) -> gr.Error:
        """The error for ``message``, kept for the tab's status line as well."""
        if len(self._errors) >= MAX_KEPT_ERRORS:
            self._errors.pop(next(iter(self._errors)))
        self._errors[tab] = message
        return _shown(message)

    def last_error(self, request: gr.Request) -> Any:
        """The status line after a failed run: the error, in place of the last success.

        A cancelled run ends as "failed" too, with no error: its "Cancelled" stays.
        """
        message = self._errors.pop(request.session_hash or "", None)
        if message is None:
            return gr.skip()
        return f"⚠ {html.escape(message, quote=False)}"

    def choose_from_history(self, history: History, selected: gr.SelectData) -> tuple[Any, ...]:
        """Put a history entry's parameters back in the form, and its images in the gallery."""
        entry = HistoryEntry.from_state(history[selected.index])
        status = f"From history · seed {entry.seed} · {entry.model or 'parameters restored'}"
        seed_used = "" if entry.seed is None else str(entry.seed)
        return (*entry.form_values(), list(entry.images), seed_used, status)

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


def history_gallery(history: History) -> tuple[list[tuple[str, str]], dict[str, Any]]:
    """The history strip (the first image of each earlier run, newest first), shown
    only once there is something in it: no empty white box."""
    entries = [HistoryEntry.from_state(data) for data in history]
    thumbnails = [(entry.images[0], entry.caption) for entry in entries if entry.images]
    return thumbnails, gr.update(visible=bool(thumbnails))
