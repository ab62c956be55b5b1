"""The web app: the page, the sessions and the login, put together and launched.

>>> from oscar_sd import Settings
>>> from oscar_sd.ui import build_app
>>> app = build_app(Settings(oscar_endpoint="https://oscar.example.org"))
>>> url = app.launch(prevent_thread_lock=True)    # doctest: +SKIP
>>> app.close()                                   # doctest: +SKIP

With ``oscar_endpoint`` set, every login opens the user's own OSCAR backend;
without it, one local backend (:class:`~oscar_sd.LocalSD`) serves everybody,
behind a login only when ``OSCAR_SD_USERS`` names accounts.
"""

from __future__ import annotations

import html
import logging
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
import gradio as gr
from gradio.utils import get_upload_folder
from starlette.middleware import Middleware
from starlette.routing import Route

from .._backend import Backend
from .._local import LocalSD
from .._oscar import OscarSD
from .._settings import Settings
from .handlers import Handlers
from .http import FileGuard, LogoutHook, health_route
from .login import BackendFactory, ClusterLogin, LocalLogin
from .page import CSS, build_page
from .sessions import Sessions

log = logging.getLogger("oscar_sd.ui")

#: A session nobody has used for this long is closed and its images deleted.
IDLE_TIMEOUT = 8 * 3600.0


def cluster_backends(settings: Settings) -> BackendFactory:
    """Each login opens the user's own :class:`~oscar_sd.OscarSD`, with their credentials."""

    async def open_backend(user: str, password: str, results_dir: Path) -> Backend:
        return await OscarSD.connect(
            settings.oscar_endpoint,
            user=user,
            password=password,
            service=settings.service,
            verify_ssl=settings.verify_ssl,
            timeout=settings.timeout,
            results_dir=results_dir,
        )

    return open_backend


class WebApp:
    """The Gradio page with its sessions; :meth:`launch` serves it, :meth:`close` stops it."""

    def __init__(
        self,
        settings: Settings,
        backend_factory: BackendFactory | None = None,
        *,
        idle_timeout: float = IDLE_TIMEOUT,
    ) -> None:
        self.settings = settings
        # Inside Gradio's temp folder, so results are served as they are (no
        # re-encoding, no copies); one random-named folder per app instance.
        root = Path(get_upload_folder()) / "oscar-sd" / secrets.token_hex(8)
        self.sessions = Sessions(root, idle_timeout)
        self.local = backend_factory is None and settings.local
        # The local backend is made on the server's event loop, at startup.
        self.local_backend: LocalSD | None = None
        self.login: ClusterLogin | LocalLogin | None
        if not self.local:
            factory = backend_factory or cluster_backends(settings)
            self.login = ClusterLogin(self.sessions, factory)
        elif settings.local_accounts():
            self.login = LocalLogin(self.sessions, settings.local_accounts(), self._shared)
        else:
            self.login = None
        self.handlers = Handlers(self.sessions, self._shared if self.login is None else None)
        self.blocks = build_page(
            self.handlers,
            describe_backend=self._describe_backend,
            login_enabled=self.login is not None,
            concurrency=settings.concurrency,
        )
        self.url: str | None = None

    def launch(
        self,
        *,
        server_name: str | None = None,
        server_port: int | None = None,
        prevent_thread_lock: bool = False,
    ) -> str:
        """Serve; return the URL. Blocks until interrupted without ``prevent_thread_lock``."""
        settings = self.settings
        # Many users wait at once: never Gradio's default of one at a time.
        self.blocks.queue(default_concurrency_limit=settings.concurrency)
        _, self.url, _ = self.blocks.launch(
            server_name=server_name or settings.host,
            server_port=server_port or settings.port,
            auth=self.login.check if self.login else None,
            auth_message=self._login_message(),
            root_path=settings.root_path or None,
            prevent_thread_lock=True,  # blocked below, once the address is logged
            show_error=False,  # unexpected errors stay in the log; gr.Error messages show
            quiet=True,
            footer_links=["api", "gradio", "settings"],
            run_history=False,
            ssr_mode=False,
            enable_monitoring=False,
            mcp_server=False,
            css=CSS,
            theme=gr.themes.Soft(),
            app_kwargs={
                "routes": [Route("/healthz", health_route(self._health))],
                "middleware": [
                    Middleware(FileGuard, sessions=self.sessions),
                    Middleware(
                        LogoutHook, sessions=self.sessions, root_path=settings.root_path
                    ),
                ],
                "lifespan": self._lifespan,
            },
        )
        log.info("oscar-sd web app on %s (%s)", self.url, self._backend_summary())
        if not prevent_thread_lock:
            self.blocks.block_thread()  # until Ctrl-C (or SIGTERM, see serve())
        return self.url

    def close(self) -> None:
        """Stop serving; every session is closed and its files deleted."""
        self.blocks.close()

    @asynccontextmanager
    async def _lifespan(self, app: Any) -> AsyncIterator[None]:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(self._expire_idle_sessions)
            if self.local:
                self.local_backend = LocalSD(
                    model=self.settings.model, results_dir=self.sessions.root / "incoming"
                )
                tasks.start_soon(self._warm_up, self.local_backend)
            try:
                yield
            finally:
                tasks.cancel_scope.cancel()
                with anyio.CancelScope(shield=True):
                    await self.sessions.close_all()
                    if self.local_backend is not None:
                        await self.local_backend.aclose()

    async def _expire_idle_sessions(self) -> None:
        interval = min(60.0, self.sessions.idle_timeout / 2)
        while True:
            await anyio.sleep(interval)
            await self.sessions.expire_idle()

    async def _warm_up(self, backend: LocalSD) -> None:
        """Load the model now rather than on the first click (it may take minutes)."""
        try:
            await backend.load()
            log.info("local backend ready: %s", backend.description)
        except Exception as exc:  # the first request tries again and reports it
            log.warning("loading the local model failed: %s", exc)

    def _shared(self) -> Backend:
        if self.local_backend is None:
            raise RuntimeError("the local backend exists only while the app runs")
        return self.local_backend

    def _describe_backend(self, request: gr.Request) -> str:
        backend: Backend | None = None
        if request.username and (session := self.sessions.get(request.username)):
            backend = session.backend
        elif self.local:
            backend = self.local_backend
        description = backend.description if backend else self._backend_summary()
        return f"Images made by {html.escape(description)}"

    def _backend_summary(self) -> str:
        if self.local:
            return "the local backend (this computer)"
        endpoint = _public_url(self.settings.oscar_endpoint)
        return f"OSCAR service {self.settings.service!r} at {endpoint}"

    def _login_message(self) -> str | None:
        if self.login is None:
            return None
        if self.local:
            return "Log in with an account of this app (OSCAR_SD_USERS)."
        where = html.escape(_public_url(self.settings.oscar_endpoint))
        return f"Log in with your OSCAR account on {where}."

    def _health(self) -> dict[str, object]:
        return {"mode": "local" if self.local else "cluster", "sessions": len(self.sessions)}


def _public_url(url: str) -> str:
    """``url`` without any user:password part."""
    parts = urlsplit(url)
    if not parts.hostname:
        return url
    host = parts.hostname + (f":{parts.port}" if parts.port else "")
    return parts._replace(netloc=host).geturl()
