"""Who is logged in, with which backend, and where their images live.

A :class:`UserSession` is one login's seat in the app: its own backend (its
own OSCAR client, DESIGN.md mistake 1), and a private folder for its results
whose name is a random token, so nobody can guess it. Each login gets a new
session under a random key, never the user name: OSCAR has one basic-auth
account, so many people may log in with the same name, and each must have
their own folder and history, and a logout that ends only their own session.
The :class:`Sessions` registry opens a session at login and closes it at logout,
after it has sat idle too long, when its sign-in expires, or when the app
stops; closing one deletes its folder. A login's runs stay on disk, with its
history, until the session ends (so a reload of the tab shows them again) or
the results budget (``budget.py``) needs their room: then the oldest go, and
their history entries with them.

Everything here runs on the server's event loop; nothing blocks it (file moves
and deletions go through a worker thread).
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import anyio

from .._backend import Backend
from .._errors import SignInExpired
from .._models import GenerationResult
from .._tokens import OidcToken
from ..history import History
from .budget import MB, ResultsBudget, Run
from .form import HistoryEntry
from .run_folders import entry_of_record, link_from, remove_all, remove_runs, settle

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

    def __init__(self, key: str, reason: str | None = None) -> None:
        super().__init__(key)
        #: What the person is told, when the app knows why the session ended.
        self.reason = reason


def new_session_key() -> str:
    """A fresh random key for one login (also Gradio's ``request.username``)."""
    return secrets.token_hex(16)


#: What a person whose session ended by itself (idle, credentials refused) is told.
SESSION_EXPIRED = (
    "Your session has expired. Log out (top right) and log in again to go on making images."
)

#: How many ended sessions' reasons are remembered (to tell the person why).
ENDED_MEMORY = 10_000
#: How many runs' cache folders are remembered for other logins of their identity.
CACHED_RUNS_KEPT = 10_000


#: What a page user reads when the app's service was not usable at their login.
SERVICE_NOT_READY_AT_LOGIN = (
    "This app could not make images when you logged in: the image service it is set up "
    "to use was not ready on the cluster. Once the person who runs this app has fixed "
    "that (its log says what is wrong), log out and log in again."
)


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
    #: Who logged in (a user name or an OIDC subject), for the log: never a key.
    account: str = ""
    #: An OIDC sign-in's token, renewed before it expires; None with a password.
    token: OidcToken | None = None
    last_used: float = field(default_factory=time.monotonic)
    #: The identity's runs, newest first (the page's history); their images are
    #: fetched from ``store`` into ``directory`` (a cache) when shown.
    history: list[HistoryEntry] = field(default_factory=list)
    #: Where the identity's history is kept (its bucket, or a folder locally).
    store: History | None = None
    #: When ``history`` was last read from ``store`` (monotonic), None before.
    history_read_at: float | None = None
    _in_flight: int = 0
    _retired: list[Backend] = field(default_factory=list)

    def touch(self) -> None:
        self.last_used = time.monotonic()

    @property
    def busy(self) -> bool:
        return self._in_flight > 0


class Sessions:
    """The registry of open sessions of one app."""

    def __init__(
        self, root: Path, idle_timeout: float, budget: ResultsBudget | None = None
    ) -> None:
        # Resolved, so that paths in requests compare with it after resolving.
        self.root = root.resolve()
        self.idle_timeout = idle_timeout
        self.budget = budget if budget is not None else ResultsBudget(512 * MB, 100 * MB)
        self._sessions: dict[str, UserSession] = {}
        #: Seconds a run of a stopped app process must have waited before this one
        #: takes its result into the owner's history (ui/inflight.py).
        self.adopt_after = 30.0
        self._directories: dict[Path, UserSession] = {}
        #: (history place, run id) -> a folder of this cache holding that run's images.
        self._cached: OrderedDict[tuple[str, str], Path] = OrderedDict()
        # key -> why it ended, for sessions ended by the app (not by their own logout).
        self._ended: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def get(self, key: str) -> UserSession | None:
        return self._sessions.get(key)

    def of_account(self, account: str) -> list[UserSession]:
        """The open sessions of one account (each login has its own)."""
        return [s for s in self._sessions.values() if s.account == account]

    def ended_reason(self, key: str) -> str | None:
        """Why the app ended session ``key`` (e.g. the sign-in expired), if it did."""
        return self._ended.get(key)

    def require(self, key: str) -> UserSession:
        """The open session of ``key``; :class:`SessionExpired` when there is none."""
        session = self._sessions.get(key)
        if session is None:
            raise SessionExpired(key, self._ended.get(key))
        session.touch()
        return session

    def new_folder(self) -> Path:
        """A fresh, unguessable folder name for a new session's results."""
        return self.root / secrets.token_urlsafe(24)

    async def open(
        self,
        key: str,
        backend: Backend | None,
        *,
        owns_backend: bool,
        account: str = "",
        token: OidcToken | None = None,
        reconnect: Reconnect | None = None,
        backend_error: Exception | None = None,
        directory: Path | None = None,
        store: History | None = None,
    ) -> UserSession:
        """Open a new session under ``key`` (a fresh :func:`new_session_key` per login)."""
        if key in self._sessions:
            raise ValueError("a session key is used once")
        folder = directory or self.new_folder()
        await anyio.to_thread.run_sync(
            lambda: folder.mkdir(parents=True, mode=0o700, exist_ok=True)
        )
        session = UserSession(
            key, folder, backend, owns_backend, reconnect, backend_error, account=account,
            token=token, store=store,
        )
        self._sessions[key] = session
        self._directories[folder] = session
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
                if session.backend_error is None:
                    raise SessionExpired(session.key)
                # A password login: the password was not kept to try again with. The
                # operator's detail (which service, what the cluster has) went to the log.
                raise SessionExpired(session.key, SERVICE_NOT_READY_AT_LOGIN)
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

    async def keep(self, session: UserSession, result: GenerationResult) -> HistoryEntry:
        """Keep a result in the session's private folder and at the top of its history.

        The user's own backend already writes there; the shared local backend
        does not. Older runs over the results budget are deleted, with their
        history entries.
        """
        source = result.directory
        # Without a store, a run already in the session's folder stays where it is.
        run_id = source.name if source.parent == session.directory else (
            secrets.token_urlsafe(12)
        )
        dropped: list[str] = []
        if session.store is not None:  # kept first, so that the cache is named by its id
            try:
                record, dropped = await session.store.add(result)
                run_id = record.run_id
            except Exception as exc:  # shown now all the same; only the history lacks it
                log.warning("could not keep a run in the history (%s): %s",
                            session.store.description, type(exc).__name__)
        target = session.directory / run_id
        size = await anyio.to_thread.run_sync(settle, source, target)
        self._remember_cached(session, run_id, target)
        images = [target / image.relative_to(source) for image in result.images]
        entry = HistoryEntry.of(result, images=images, run=run_id)
        session.history.insert(0, entry)
        if dropped:
            await self._forget_runs(session, set(dropped))
        evicted = self.budget.add(Run(run_id, session.key, size, target))
        if evicted:
            await self._evict(evicted)
        return entry

    async def load_history(self, session: UserSession) -> list[HistoryEntry]:
        """The identity's history from its store, newest first (another browser's or
        another replica's runs included); the images stay in the store until shown."""
        if session.store is None:
            return session.history
        records = await session.store.runs()
        session.history_read_at = time.monotonic()
        known = {entry.run: entry for entry in session.history}
        session.history = [
            known.get(record.run_id) or entry_of_record(record, session.directory)
            for record in records
        ]
        return session.history

    async def materialise(
        self, session: UserSession, entry: HistoryEntry, *, first_only: bool = False
    ) -> bool:
        """Fetch the entry's images (or its first) from the store into the cache;
        False when the run is no longer there."""
        wanted = entry.images[:1] if first_only else entry.images
        missing = [p for p in wanted if not await anyio.to_thread.run_sync(Path(p).is_file)]
        if not missing:
            return True
        if session.store is None:
            return False
        folder = Path(entry.images[0]).parent
        cached = self._cached.get((session.store.place, entry.run))
        if cached is not None and cached != folder:
            left = await anyio.to_thread.run_sync(link_from, [Path(p) for p in missing], cached)
            if not left:
                return True
            missing = [str(p) for p in left]
        record = await session.store.record(entry.run)
        if record is None:
            return False
        try:
            await session.store.fetch(record, folder, tuple(Path(p).name for p in missing))
        except KeyError:  # deleted meanwhile (another browser, another login's budget)
            return False
        self._remember_cached(session, entry.run, folder)
        return True

    def _remember_cached(self, session: UserSession, run_id: str, folder: Path) -> None:
        """Where a run's images lie in this app's cache, for the other logins of its
        identity (``run_folders.link_from``); bounded, the newest kept."""
        if session.store is None:
            return
        key = (session.store.place, run_id)
        self._cached[key] = folder
        self._cached.move_to_end(key)
        while len(self._cached) > CACHED_RUNS_KEPT:
            self._cached.popitem(last=False)

    async def delete_run(self, session: UserSession, run_id: str) -> bool:
        """Delete a run from the identity's history (in its store) and from the cache."""
        if not any(entry.run == run_id for entry in session.history):
            return False
        if session.store is not None:
            await session.store.delete(run_id)
        await self._forget_runs(session, {run_id})
        return True

    async def _forget_runs(self, session: UserSession, runs: set[str]) -> None:
        session.history = [e for e in session.history if e.run not in runs]
        folders = []
        for run_id in runs:
            cached = self.budget.get(run_id)
            if cached is not None:
                self.budget.forget(run_id)
            folders.append(session.directory / run_id)
        await anyio.to_thread.run_sync(remove_runs, folders)

    def run_of(self, run_id: str) -> tuple[UserSession, HistoryEntry] | None:
        """The session and history entry of a run still on disk, if any."""
        run = self.budget.get(run_id)
        owner = self._sessions.get(run.owner) if run else None
        for session in [owner] if owner else list(self._sessions.values()):
            for entry in session.history:
                if entry.run == run_id:
                    return session, entry
        return None

    async def _evict(self, runs: list[Run]) -> None:
        """Runs over the cache's budget: off the app's disk. A run kept in a history
        store stays in its session's history (fetched again when shown); one that
        has no store leaves it."""
        gone = {run.run_id for run in runs}
        for owner in {run.owner for run in runs}:
            session = self._sessions.get(owner)
            if session is not None and session.store is None:
                session.history = [e for e in session.history if e.run not in gone]
        log.info("results cache: %d older run(s) deleted from the app's disk", len(runs))
        await anyio.to_thread.run_sync(remove_runs, [run.folder for run in runs])

    async def close(self, key: str, reason: str, *, tell: str | None = None) -> None:
        """End a session: close its own backend and delete its folder.

        ``tell`` is what the person hears on their next click (e.g. "Your
        sign-in has expired, sign in again").
        """
        session = self._sessions.pop(key, None)
        if session is None:
            return
        if tell is not None:
            if len(self._ended) >= ENDED_MEMORY:
                self._ended.pop(next(iter(self._ended)))
            self._ended[key] = tell
        self._directories.pop(session.directory, None)
        self.budget.forget_owner(key)
        session.history = []
        log.info("session closed (%s); %d still open", reason, len(self._sessions))
        if session.owns_backend:
            if session.backend is not None:
                session._retired.append(session.backend)
            session.backend = None
            # Closing cancels the requests still running on it: the user is gone.
            await _close_all(session._retired)
            session._retired.clear()
        await anyio.to_thread.run_sync(remove_all, [session.directory])

    async def expire_idle(self) -> None:
        """Close the sessions nobody has used for ``idle_timeout`` seconds."""
        deadline = time.monotonic() - self.idle_timeout
        for key, session in list(self._sessions.items()):
            if session.last_used < deadline and not session.busy:
                await self.close(key, "idle", tell=SESSION_EXPIRED)

    async def renew_tokens(self) -> None:
        """Renew the OIDC tokens that are due; a refused renewal ends its session."""
        for key, session in list(self._sessions.items()):
            token = session.token
            if token is None or not token.refresh_due():
                continue
            try:
                await token.fresh()
            except SignInExpired as expired:
                await self.close(key, "sign-in expired", tell=str(expired))
            except Exception as exc:  # the provider is unreachable: try again next round
                log.warning("renewing a sign-in failed: %s", type(exc).__name__)

    async def close_all(self) -> None:
        for key in list(self._sessions):
            await self.close(key, "app stopping")
        await anyio.to_thread.run_sync(remove_all, [self.root])

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
