"""What the page's events do: generate, show and pick from history, forget a closed tab.

The generate handler is ``async`` and awaits the library; while it waits,
each progress report of the backend becomes Gradio progress (stage, step,
place in line, seconds so far). Failures become :class:`gr.Error` with a
sentence the person can act on (``failures.py``).
"""

from __future__ import annotations

import functools
import html
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
import gradio as gr

from .._backend import Backend
from .._choice import ModelChoice
from .._errors import AuthenticationError, InvalidRequestError, OscarSDError
from .._models import GenerationResult, count_of
from ..history import History
from .cancel import cancellable
from .downloads import DOWNLOADS, image_names
from .drain import Drain, Draining
from .failures import GONE_FROM_HISTORY, UNEXPECTED, message_for, shown
from .form import (
    DEFAULT_SIZE,
    FORM_ORDER,
    FieldValue,
    HistoryEntry,
    build_request,
    image_info,
    image_seed_of,
    without_bidi_controls,
)
from .gallery import gallery_value
from .inflight import collect_pending, noted
from .progress import StageDisplay
from .sessions import SESSION_EXPIRED, SessionExpired, Sessions, UserSession, tab_key
from .share import DAY, SHARE, Shares
from .start_image import start_image_of

log = logging.getLogger("oscar_sd.ui")
T = TypeVar("T")

#: How many tabs' last errors are kept at most (each is shown, then dropped).
MAX_KEPT_ERRORS = 10_000
#: Seconds after which the strip shown after a run is read again from the history's
#: store (other browsers' runs); a page load always reads it.
HISTORY_REREAD = 30.0


def status_line(result: GenerationResult) -> str:
    seconds = result.timings.total
    took = f" in {seconds:.1f} s" if seconds else ""
    model = f" · {result.model}" if result.model else ""
    return f"{count_of(len(result.images), 'image')}{took} · seed {result.request.seed}{model}"


def counted(method: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """A run that the app's drain waits for (``drain.py``); refused once it drains.

    ``functools.wraps`` keeps the signature Gradio reads (``request``, ``progress``).
    """

    @functools.wraps(method)
    async def run(self: Handlers, *args: Any, **kwargs: Any) -> T:
        try:
            running = self.drain.run()
            running.__enter__()
        except Draining as draining:
            raise shown(str(draining)) from None
        try:
            return await method(self, *args, **kwargs)
        finally:
            running.__exit__(None, None, None)

    return run


class Handlers:
    """The page's event handlers, bound to the app's sessions."""

    def __init__(
        self, sessions: Sessions, shared_backend: Callable[[], Backend] | None,
        machine_history: History | None = None,
        shares: Shares | None = None,
        root_path: str = "",
    ) -> None:
        self._sessions = sessions
        #: The runs in flight, which a SIGTERM lets finish (drain.py).
        self.drain = Drain()
        self._shares = shares
        self._root_path = root_path.rstrip("/")
        # Without login (local mode), each tab gets a session on the shared backend,
        # and they all share this machine's history.
        self._shared_backend = shared_backend
        self._machine_history = machine_history
        # Each tab's last error, until its status line has shown it (see last_error).
        self._errors: dict[str, str] = {}

    @counted
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
        start_image: Any = None,
        strength: float | None = None,
        model: str | None = None,
        request: gr.Request | None = None,
        progress: gr.Progress = gr.Progress(),  # noqa: B008 (Gradio's documented idiom)
    ) -> tuple[list[dict[str, object]], str, str, str]:
        """Make the images the form asks for; returns gallery, seed used, status, run id.

        The defaults are the API's: ``client.predict("a red fox", api_name="/generate")``;
        image to image with ``start_image=handle_file("fox.png"), strength=0.6``; where
        the page offers several models, ``model=`` names one (default: the first).
        Gradio fills ``request`` and ``progress``; it neither pre- nor postprocesses
        (see ``page.py``), so the values come as sent and go as shown. The run joins
        the login's history, kept on the server (see ``Sessions.keep``).
        """
        if request is None:
            raise shown(SESSION_EXPIRED)
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
                await start_image_of(start_image),
                strength,
            )
            session = await self._session_of(request)
        except (InvalidRequestError, SessionExpired) as exc:
            raise self._failed(tab, message_for(exc)) from None

        display = StageDisplay(progress)
        try:
            if session.token is not None:  # renewed now if it has under 60 s left
                await session.token.fresh()
            async with self._sessions.using(session) as backend:
                chosen = backend.pick(model) if isinstance(backend, ModelChoice) else backend
                async with noted(session, chosen) as run:
                    result = await cancellable(
                        run, generation, display, alongside=display.keep_counting
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
        status = status_line(result)
        entry = await self._sessions.keep(session, result)
        log.info("generated %d images in %.1f s", len(result.images), result.timings.total)
        return _gallery_of(entry), str(result.request.seed), status, entry.run

    def _failed(self, tab: str, message: str) -> gr.Error:
        """The error for ``message``, kept for the tab's status line as well."""
        if len(self._errors) >= MAX_KEPT_ERRORS:
            self._errors.pop(next(iter(self._errors)))
        self._errors[tab] = message
        return shown(message)

    def last_error(self, request: gr.Request) -> tuple[Any, ...]:
        """After a failed run: the error on the status line, in place of the last success,
        and the last run's images, seed and buttons gone (they are not this click's).

        A cancelled run ends as "failed" too, with no error: its "Cancelled" stays,
        and so does what the page showed.
        """
        message = self._errors.pop(request.session_hash or "", None)
        if message is None:
            return (gr.skip(),) * 7
        hidden = gr.update(visible=False)
        return (f"⚠ {html.escape(message, quote=False)}", [], "", hidden, hidden,
                gr.update(value="", visible=False), "")

    async def history(
        self, request: gr.Request, *, reread: bool = True
    ) -> tuple[list[dict[str, object]], dict[str, Any]]:
        """The history strip of this identity (the first image of each run, newest
        first, captioned with the prompt's start and the seed), read again from its
        store (another browser's runs show too), shown only when there is something
        in it: no empty white box. The strip comes as Gradio shows it.

        Not ``reread`` (after a run, which the session's history has already): read
        from the store only once the last read is ``HISTORY_REREAD`` seconds old. A
        read lists the history and fetches the thumbnails it lacks; after every click
        it made a click cost more the fuller the history, and the more browsers
        shared it."""
        entries = await self._load_history(request, reread)
        thumbnails = [(entry.images[0], entry.caption) for entry in entries if entry.images]
        label = self._history_label(request)
        return gallery_value(thumbnails), gr.update(visible=bool(thumbnails), label=label)

    async def _load_history(self, request: gr.Request, reread: bool = True
                            ) -> list[HistoryEntry]:
        try:
            session = await self._session_of(request)
            read_at = session.history_read_at
            if (not reread and read_at is not None
                    and time.monotonic() - read_at < HISTORY_REREAD):
                # Materialised at that read, or kept here since: one look at the disk.
                return await anyio.to_thread.run_sync(_with_thumbnails, list(session.history))
            # Runs an earlier app process did not wait out come in first (inflight.py).
            await collect_pending(self._sessions, session, self._sessions.adopt_after)
            entries = await self._sessions.load_history(session)
        except SessionExpired:
            return []
        except Exception as exc:  # storage unreachable: the page works, the strip waits
            log.warning("reading the history failed: %s", type(exc).__name__)
            return self._history_of(request)
        shown = []
        async with anyio.create_task_group() as tasks:
            async def thumbnail(entry: HistoryEntry) -> None:
                if await self._sessions.materialise(session, entry, first_only=True):
                    shown.append(entry)
            for entry in entries:
                if entry.images:
                    tasks.start_soon(thumbnail, entry)
        order = {entry.run: n for n, entry in enumerate(entries)}
        return sorted(shown, key=lambda entry: order[entry.run])

    def _history_label(self, request: gr.Request) -> str:
        session = self._sessions.get(self._key_of(request))
        store = session.store if session else None
        if store is None:
            return "History (this login)"
        if store.shared and session is not None and session.owns_backend:
            return ("History: shared by everyone who logs in with this cluster account "
                    "(basic auth has one account)")
        return f"History, kept on {store.description}"

    async def show_run(self, run: str, request: gr.Request) -> tuple[Any, ...]:
        """After a run is shown: the history strip, the first image picked (its
        parameters on the page), and the buttons with the set's zip link."""
        thumbnails, history_box = await self.history(request, reread=False)
        parameters = await self.parameters_of(run, 0, request)
        link = (
            f'<a href="{DOWNLOADS}/{html.escape(run)}.zip" download>Download all (.zip)</a>'
            if self._entry(request, run) else ""
        )
        return (
            thumbnails,
            history_box,
            0,
            gr.update(value=parameters, visible=bool(parameters)),
            gr.update(visible=bool(link)),
            link,
            gr.update(visible=bool(link)),  # the seed used, with its run
        )

    async def choose_from_history(
        self, selected: gr.SelectData, request: gr.Request
    ) -> tuple[Any, ...]:
        """Put a history entry's parameters back in the form, and its images in the gallery."""
        entries = [entry for entry in self._history_of(request) if entry.images]
        session = self._sessions.get(self._key_of(request))
        gone = (*[gr.skip()] * (len(FORM_ORDER) + 3), GONE_FROM_HISTORY, gr.skip())
        if session is None or not 0 <= selected.index < len(entries):
            return gone
        entry = entries[selected.index]
        try:
            if not await self._sessions.materialise(session, entry):
                return gone
        except Exception as exc:
            log.warning("fetching a run from the history failed: %s", type(exc).__name__)
            return (*gone[:-2], "The history's storage cannot be reached. Try again.", gr.skip())
        status = f"From history · seed {entry.seed} · {entry.model or 'parameters restored'}"
        seed_used = "" if entry.seed is None else str(entry.seed)
        return (*entry.form_values(), _gallery_of(entry), seed_used, "", status, entry.run)

    def _history_of(self, request: gr.Request) -> list[HistoryEntry]:
        session = self._sessions.get(self._key_of(request))
        return list(session.history) if session else []

    def _entry(self, request: gr.Request, run: str) -> HistoryEntry | None:
        found = self._sessions.run_of(run) if run else None
        if found is None or found[0].key != self._key_of(request):
            return None
        return found[1]

    def _key_of(self, request: gr.Request) -> str:
        return request.username or tab_key(request.session_hash or "")

    async def pick_image(
        self, run: str, selected: gr.SelectData, request: gr.Request
    ) -> tuple[int, str]:
        """An image of the run was clicked: it is the one the buttons act on."""
        return selected.index, await self.parameters_of(run, selected.index, request)

    async def parameters_of(self, run: str, index: int, request: gr.Request) -> str:
        """The A1111 parameters text inside image ``index`` of ``run`` ("" if none)."""
        entry = self._entry(request, run)
        if entry is None or not 0 <= index < len(entry.images):
            return ""
        info = await anyio.to_thread.run_sync(image_info, entry.images[index])
        return without_bidi_controls(info.parameters)

    async def use_seed(self, run: str, index: int, request: gr.Request) -> tuple[Any, ...]:
        """The picked image's own seed into the Seed field, with Randomize off."""
        entry = self._entry(request, run)
        if entry is None or not 0 <= index < len(entry.images):
            return gr.skip(), gr.skip(), GONE_FROM_HISTORY
        info = await anyio.to_thread.run_sync(image_info, entry.images[index])
        seed = info.seed if info.seed is not None else image_seed_of(entry, index)
        if seed is None:
            return gr.skip(), gr.skip(), "This image does not say which seed made it."
        said = f"Seed {seed} (image {index + 1}) is set: the next run starts with that image."
        return str(seed), False, said

    async def delete_run(self, run: str, request: gr.Request) -> tuple[Any, ...]:
        """Delete the run shown from the identity's history (its storage too): the
        gallery empties, the strip loses it."""
        session = self._sessions.get(self._key_of(request))
        deleted = False
        if session is not None and run:
            try:
                deleted = await self._sessions.delete_run(session, run)
            except Exception as exc:
                log.warning("deleting a run failed: %s", type(exc).__name__)
                return (*[gr.skip()] * 5, "The run could not be deleted: the storage did "
                        "not answer. Try again.")
        thumbnails, history_box = await self.history(request)
        said = "Run deleted." if deleted else GONE_FROM_HISTORY
        return [], "", thumbnails, history_box, gr.update(visible=False), said

    async def share_run(self, run: str, request: gr.Request) -> tuple[Any, str]:
        """A link that shows the run shown, to anyone who has it, until it expires."""
        session = self._sessions.get(self._key_of(request))
        if session is None or session.store is None or self._shares is None or not run:
            return gr.skip(), "This run cannot be shared: it is not in a history."
        try:
            token = await self._shares.token_for(session.store, run)
        except Exception as exc:
            log.warning("making a share link failed: %s", type(exc).__name__)
            return gr.skip(), "The share link could not be made: the storage did not answer."
        if token is None:
            return gr.skip(), GONE_FROM_HISTORY
        link = f"{self._public_root(request)}/{SHARE}/{token}"
        days = self._shares.lifetime / DAY
        said = f"Anyone with this link sees these images, without signing in, for {days:g} days."
        return gr.update(value=link, visible=True), said

    def _public_root(self, request: gr.Request) -> str:
        """The app's address as the browser sees it (behind an Ingress too)."""
        headers = request.headers
        scheme = headers.get("x-forwarded-proto", "").split(",")[0].strip() or (
            request.request.url.scheme if request.request is not None else "http"
        )
        host = headers.get("x-forwarded-host", "").split(",")[0].strip() or headers.get(
            "host", "localhost"
        )
        return f"{scheme}://{host}{self._root_path}"

    def models(self, request: gr.Request) -> Any:
        """The model choice of this login (or of this computer), shown when there is one."""
        backend = None
        if request.username and (session := self._sessions.get(request.username)):
            backend = session.backend
        elif not request.username and self._shared_backend is not None:
            try:
                backend = self._shared_backend()
            except RuntimeError:  # the app is not serving yet
                backend = None
        names = backend.models if isinstance(backend, ModelChoice) else []
        return gr.update(choices=names, value=names[0] if names else None,
                         visible=len(names) > 1)

    async def use_as_start(self, run: str, index: int, request: gr.Request) -> tuple[Any, ...]:
        """The picked image into the start image box: the next run starts from it."""
        entry = self._entry(request, run)
        if entry is None or not 0 <= index < len(entry.images):
            return gr.skip(), gr.skip(), GONE_FROM_HISTORY
        said = (f"Image {index + 1} is the start image: the next run redraws it "
                "(Strength sets how much).")
        return entry.images[index], gr.update(open=True), said

    async def forget_tab(self, request: gr.Request) -> None:
        """A tab closed: without login its session (and images) go; a login's history
        stays for its next tab, within the results budget."""
        if not request.username:
            await self._sessions.close(tab_key(request.session_hash or ""), "tab closed")

    async def _session_of(self, request: gr.Request) -> UserSession:
        if request.username:
            return self._sessions.require(request.username)
        if self._shared_backend is None:  # every route needs a login then; be safe anyway
            raise SessionExpired("no user")
        key = tab_key(request.session_hash or "")
        return self._sessions.get(key) or await self._sessions.open(
            key, self._shared_backend(), owns_backend=False, store=self._machine_history
        )


def _gallery_of(entry: HistoryEntry) -> list[dict[str, object]]:
    """A run's images as the results gallery shows them, saved under names that say
    which run and image they are (downloads.py)."""
    return gallery_value(entry.images, image_names(entry.prompt, entry.seed, len(entry.images)))


def _with_thumbnails(entries: list[HistoryEntry]) -> list[HistoryEntry]:
    """The entries whose first image is in the cache, in their order."""
    return [entry for entry in entries if entry.images and Path(entry.images[0]).is_file()]
