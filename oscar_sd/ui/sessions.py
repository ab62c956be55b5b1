"""Who is logged in, with which backend, and where their images live.

A :class:`UserSession` is one person's seat in the app: their own backend
(their own OSCAR credentials and client, DESIGN.md mistake 1), and a private
folder for their results whose name is a random token, so nobody can guess it.
The :class:`Sessions` registry opens a session at login and closes it at logout,
after it has sat idle too long, or when the app stops; closing one deletes its
folder. Results are also tracked per browser tab, so closing a tab deletes the
images that tab made.

Everything here runs on the server's event loop; nothing blocks it (file moves
and deletions go through a worker thread).
"""

from __future__ import annotations

import logging
import secrets
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import anyio

from .._backend import Backend
from .._models import GenerationResult

log = logging.getLogger("oscar_sd.ui")

#: Opens a backend again for a logged-in user (used when the service was missing at login).
Reconnect = Callable[[], Awaitable[Backend]]


def tab_key(session_hash: str) -> str:
    """The session key of a browser tab when there is no login (local mode)."""
    return f"tab:{session_hash}"


def is_tab_key(key: str) -> bool:
    return key.startswith("tab:")


class SessionExpired(Exception):
    """The request has no open session (logged out elsewhere, idle too long, restarted)."""


@dataclass(eq=False)
class UserSession:
    """One logged-in user (or, without login, one browser tab)."""

    key: str
    directory: Path
    backend: Backend | None
    #: True when the backend is this user's own and closes with the session;
    #: False for the local backend, which all sessions share.
    owns_backend: bool
    reconnect: Reconnect | None = None
    #: The error that kept ``backend`` from opening at login (e.g. the service is missing).
    backend_error: Exception | None = None
    last_used: float = field(default_factory=time.monotonic)
    results_by_tab: dict[str, list[Path]] = field(default_factory=dict)
    _in_flight: int = 0
    _retired: list[Backend] = field(default_factory=list)

    def touch(self) -> None:
        self.last_used = time.monotonic()

    @property
    def busy(self) -> bool:
        return self._in_flight > 0


class Sessions:
    """The registry of open sessions of one app."""

    def __init__(self, root: Path, idle_timeout: float) -> None:
        # Resolved, so that paths in requests compare with it after resolving.
        self.root = root.resolve()
        self.idle_timeout = idle_timeout
        self._sessions: dict[str, UserSession] = {}
        self._directories: dict[Path, UserSession] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def get(self, key: str) -> UserSession | None:
        return self._sessions.get(key)

    def require(self, key: str) -> UserSession:
        """The open session of ``key``; :class:`SessionExpired` when there is none."""
        session = self._sessions.get(key)
        if session is None:
            raise SessionExpired(key)
        session.touch()
        return session

    def folder_for(self, key: str) -> Path:
        """The private folder of ``key``'s session: its current one, or a fresh random name."""
        session = self._sessions.get(key)
        return session.directory if session else self.root / secrets.token_urlsafe(24)

    async def open(
        self,
        key: str,
        backend: Backend | None,
        *,
        owns_backend: bool,
        reconnect: Reconnect | None = None,
        backend_error: Exception | None = None,
        directory: Path | None = None,
    ) -> UserSession:
        """Open the session of ``key``, or give a session already open a fresh backend.

        A second login of the same user (another tab, a script) keeps the same
        folder and history; the old backend is retired, i.e. closed as soon as
        the requests still running on it are done.
        """
        session = self._sessions.get(key)
        if session is None:
            folder = directory or self.folder_for(key)
            await anyio.to_thread.run_sync(
                lambda: folder.mkdir(parents=True, mode=0o700, exist_ok=True)
            )
            # Another login of the same user may have opened the session meanwhile.
            session = self._sessions.get(key)
            if session is None:
                session = UserSession(key, folder, backend, owns_backend, reconnect, backend_error)
                self._sessions[key] = session
                self._directories[folder] = session
                return session
        old = session.backend
        session.backend, session.reconnect = backend, reconnect
        session.backend_error, session.owns_backend = backend_error, owns_backend
        session.touch()
        if old is not None and old is not backend and owns_backend:
            session._retired.append(old)
            await self._close_retired(session)
        return session

    def owner_of(self, path: Path) -> UserSession | None:
        """The session whose folder holds ``path`` (an absolute, resolved path), if any."""
        try:
            top = path.relative_to(self.root).parts[0]
        except (ValueError, IndexError):
            return None
        return self._directories.get(self.root / top)

    @asynccontextmanager
    async def using(self, session: UserSession) -> AsyncIterator[Backend]:
        """Lend the session's backend for one request; it is not closed while lent."""
        if session.backend is None:
            if session.reconnect is None:
                raise session.backend_error or SessionExpired(session.key)
            # The service was missing or misconfigured at login: it may be there now.
            backend = await session.reconnect()
            if session.backend is None:
                session.backend, session.backend_error = backend, None
            else:  # another request of this user reconnected first
                await backend.aclose()
        backend = session.backend
        session._in_flight += 1
        try:
            yield backend
        finally:
            session._in_flight -= 1
            session.touch()
            await self._close_retired(session)

    async def keep(
        self, session: UserSession, tab: str, result: GenerationResult
    ) -> GenerationResult:
        """Move a result into the session's private folder and remember which tab made it.

        The user's own backend already writes there; the shared local backend does not.
        """
        source = result.directory
        if source.parent == session.directory:
            session.results_by_tab.setdefault(tab, []).append(source)
            return result
        target = session.directory / secrets.token_urlsafe(12)
        await anyio.to_thread.run_sync(shutil.move, str(source), str(target))
        images = [target / image.relative_to(source) for image in result.images]
        session.results_by_tab.setdefault(tab, []).append(target)
        return GenerationResult(
            images=images,
            request=result.request,
            job_id=result.job_id,
            directory=target,
            timings=result.timings,
            model=result.model,
        )

    async def forget_tab(self, key: str, tab: str) -> None:
        """A browser tab closed: delete the images it made."""
        session = self._sessions.get(key)
        if session is None:
            return
        folders = session.results_by_tab.pop(tab, [])
        if folders:
            await anyio.to_thread.run_sync(_remove_all, folders)

    async def close(self, key: str, reason: str) -> None:
        """End a session: close its own backend and delete its folder."""
        session = self._sessions.pop(key, None)
        if session is None:
            return
        self._directories.pop(session.directory, None)
        log.info("session closed (%s); %d still open", reason, len(self._sessions))
        if session.owns_backend:
            if session.backend is not None:
                session._retired.append(session.backend)
            session.backend = None
            # Closing cancels the requests still running on it: the user is gone.
            await _close_all(session._retired)
            session._retired.clear()
        await anyio.to_thread.run_sync(_remove_all, [session.directory])

    async def expire_idle(self) -> None:
        """Close the sessions nobody has used for ``idle_timeout`` seconds."""
        deadline = time.monotonic() - self.idle_timeout
        for key, session in list(self._sessions.items()):
            if session.last_used < deadline and not session.busy:
                await self.close(key, "idle")

    async def close_all(self) -> None:
        for key in list(self._sessions):
            await self.close(key, "app stopping")
        await anyio.to_thread.run_sync(_remove_all, [self.root])

    async def _close_retired(self, session: UserSession) -> None:
        if session._retired and not session.busy:
            retired, session._retired = session._retired, []
            await _close_all(retired)


async def _close_all(backends: list[Backend]) -> None:
    for backend in backends:
        try:
            await backend.aclose()
        except Exception:  # one failing close must not keep the others open
            log.exception("closing a backend failed")


def _remove_all(folders: list[Path]) -> None:
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)
