"""The web app: the page, the sessions and the login, put together and launched.

>>> from oscar_sd import Settings
>>> from oscar_sd.ui import build_app
>>> app = build_app(Settings(oscar_endpoint="https://oscar.example.org"))
>>> url = app.launch(prevent_thread_lock=True)    # doctest: +SKIP
>>> app.close()                                   # doctest: +SKIP

With ``oscar_endpoint`` set, every login opens its own OSCAR backend (with
the user name and password form, and "Sign in with EGI Check-in" when
``OSCAR_SD_OIDC_CLIENT_ID`` is set); without it, one local backend
(:class:`~oscar_sd.LocalSD`) serves everybody, behind a login only when
``OSCAR_SD_USERS`` names accounts. The login is the app's own (``signin.py``):
sessions are keyed by a random id per login, never by user name.
"""

from __future__ import annotations

import html
import importlib.util
import logging
import os
import secrets
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
import gradio as gr
from gradio.utils import get_upload_folder
from starlette.middleware import Middleware
from starlette.requests import HTTPConnection
from starlette.routing import Route

from .._backend import Backend
from .._choice import ModelChoice, local_models
from .._local import LocalSD
from .._settings import Settings
from .._spill import SpillOver
from .budget import MB, ResultsBudget
from .downloads import download_route
from .drain import Drain
from .failures import SERVICE_NOT_READY
from .handlers import Handlers
from .http import FileGuard, PageMeta, health_route
from .lasting import LastingSignIns, RestoreSignIn
from .login import ClusterLogin, LocalLogin, local_history
from .oidc import OidcSignIn
from .page import CSS, build_page
from .page_script import PAGE_SCRIPT, TRANSLATIONS
from .sealed import Sealer, app_secret
from .session_watch import SESSION_WATCH
from .sessions import Sessions
from .share import DAY, Shares
from .signin import LoginRedirect, SignIn

log = logging.getLogger("oscar_sd.ui")

PAGE_TITLE = "oscar-sd: text to image"
PAGE_DESCRIPTION = "Type a prompt, get six images made by Stable Diffusion on an OSCAR cluster."

#: A session nobody has used for this long is closed and its images deleted.
IDLE_TIMEOUT = 8 * 3600.0
#: How often due OIDC tokens are renewed (each is due 60 s before it expires).
TOKEN_CHECK_INTERVAL = 10.0


def remember_missing_matplotlib() -> None:
    """Make ``import matplotlib`` fail at once when it is not installed.

    Gradio imports it twice around every event (``utils.MatplotlibBackendMananger``
    in ``route_utils.call_process_api``); Python keeps no record of a failed import,
    so without matplotlib each try searches all of sys.path again. A None in
    ``sys.modules`` is Python's documented way to say "this module is not there".
    """
    if "matplotlib" not in sys.modules and importlib.util.find_spec("matplotlib") is None:
        sys.modules["matplotlib"] = None  # type: ignore[assignment]


def skip_gradio_event_analytics() -> None:
    """Keep Gradio from summing up its past events after every event.

    Its queue keeps up to 10,000 events and, after each one, builds a pandas
    table of them all for the monitoring page (``queueing.Queue.compute_analytics_summary``),
    so every click costs more the longer the app runs. The app turns monitoring
    off, so nobody reads that summary. Gradio's own variables, read when the
    queue is made, keep one event and never recompute, unless the operator set them.
    """
    os.environ.setdefault("GRADIO_ANALYTICS_MAX_EVENTS", "1")
    os.environ.setdefault("GRADIO_ANALYTICS_CACHE_FREQUENCY", str(2**62))


class WebApp:
    """The Gradio page with its sessions; :meth:`launch` serves it, :meth:`close` stops it."""

    def __init__(self, settings: Settings, *, idle_timeout: float = IDLE_TIMEOUT) -> None:
        self.settings = settings
        # Inside Gradio's temp folder, so results are served as they are (no
        # re-encoding, no copies); one random-named folder per app instance.
        root = Path(get_upload_folder()) / "oscar-sd" / secrets.token_hex(8)
        budget = ResultsBudget(
            total_bytes=settings.results_budget_mb * MB,
            per_session_bytes=settings.session_budget_mb * MB,
            per_session_runs=settings.session_runs,
        )
        self.sessions = Sessions(root, idle_timeout, budget)
        self.sessions.adopt_after = settings.adopt_after
        self.local = settings.local
        # The local backend is made on the server's event loop, at startup.
        self.local_backend: LocalSD | None = None
        #: Locally, every model that can load (the configured one first), when more than one.
        self.local_choice: ModelChoice | None = None
        self.login: ClusterLogin | LocalLogin | None
        oidc: OidcSignIn | None = None
        if not self.local:
            self.login = ClusterLogin(self.sessions, settings)
            oidc = OidcSignIn(settings) if settings.oidc_enabled else None
        elif settings.local_accounts():
            self.login = LocalLogin(
                self.sessions, settings.local_accounts(), self._shared, settings
            )
        else:
            self.login = None
        self.sealer = Sealer(app_secret(
            settings.secret_key.get_secret_value(), local=self.local,
            data_folder=settings.data_folder(),
        ))
        self.shares = Shares(self.sealer, settings.data_folder(), settings.share_days * DAY)
        self.signin: SignIn | None = None
        if self.login is not None:
            cluster_login = self.login if isinstance(self.login, ClusterLogin) else None
            self.signin = SignIn(
                self.sessions,
                root_path=settings.root_path,
                message=self._login_message() or "",
                password_login=self.login if settings.password_login else None,
                oidc=oidc,
                oidc_with_token=cluster_login.with_oidc if cluster_login else None,
                lasting=LastingSignIns(
                    self.sealer,
                    client_secret=settings.oidc_client_secret.get_secret_value() or None,
                    verify_ssl=settings.verify_ssl,
                ) if oidc is not None else None,
            )
        self.handlers = Handlers(
            self.sessions,
            self._shared if self.login is None else None,
            # Without a login the history is this machine's, one for every tab.
            machine_history=local_history(settings, None) if self.login is None else None,
            shares=self.shares,
            root_path=settings.root_path,
        )
        self.blocks = build_page(
            self.handlers,
            describe_backend=self._describe_backend,
            login_enabled=self.login is not None,
            concurrency=settings.concurrency,
            results_home=self.sessions.root,
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
        remember_missing_matplotlib()
        skip_gradio_event_analytics()
        # Many users wait at once: never Gradio's default of one at a time. Waiting
        # tabs hear their place in line once a second: Gradio's "auto" tells every
        # waiting tab each time any run starts, n messages per start for a line of n.
        self.blocks.queue(default_concurrency_limit=settings.concurrency, status_update_rate=1)
        _, self.url, _ = self.blocks.launch(
            server_name=server_name or settings.host,
            server_port=server_port or settings.port,
            # The app's own login (signin.py): Gradio asks it who each request is.
            auth_dependency=self.signin.auth_dependency if self.signin else None,
            root_path=settings.root_path or None,
            # Gradio checks each returned file against these first: the results are
            # found at the first try (and the file guard serves them).
            allowed_paths=[str(self.sessions.root)],
            prevent_thread_lock=True,  # blocked below, once the address is logged
            show_error=False,  # unexpected errors stay in the log; gr.Error messages show
            quiet=True,
            footer_links=["api", "gradio", "settings"],
            run_history=False,
            ssr_mode=False,
            enable_monitoring=False,
            mcp_server=False,
            css=CSS,
            # A page whose session ended goes to the sign-in page (session_watch.py).
            head=SESSION_WATCH if self.signin else None,
            theme=gr.themes.Soft(),
            # The page's own keyboard, busy buttons and prompt counter (page_script.py),
            # and words for the keys Gradio's screen-reader status lacks.
            js=PAGE_SCRIPT,
            i18n=gr.I18n(**TRANSLATIONS),
            # Installable; and Gradio's Settings then tells people how, instead of
            # telling developers to "start your Gradio app with launch(pwa=True)".
            pwa=True,
            app_kwargs={
                # Listed before Gradio's own routes, so /login and /logout are these.
                "routes": [
                    Route("/healthz", health_route(self._health)),
                    download_route(self.sessions, self._identify),
                    *self.shares.routes(),
                    *(self.signin.routes() if self.signin else []),
                ],
                "middleware": self._middleware(),
                "lifespan": self._lifespan,
            },
        )
        log.info("oscar-sd web app on %s (%s)", self.url, self._backend_summary())
        if not prevent_thread_lock:
            self.blocks.block_thread()  # until Ctrl-C (or SIGTERM, see serve())
        return self.url

    def _identify(self, connection: HTTPConnection) -> str | None:
        """The session key of a request's login, if it has one."""
        return self.signin.identify(connection) if self.signin else None

    def _middleware(self) -> list[Middleware]:
        middleware = [
            Middleware(FileGuard, sessions=self.sessions, identify=self._identify),
            Middleware(PageMeta, title=PAGE_TITLE, description=PAGE_DESCRIPTION),
        ]
        if self.signin is not None:
            middleware.append(Middleware(LoginRedirect, signin=self.signin))
            # Outermost: a sealed sign-in is back before anything asks who it is.
            middleware.insert(0, Middleware(RestoreSignIn, signin=self.signin))
        return middleware

    def close(self) -> None:
        """Stop serving; every session is closed and its files deleted."""
        self.blocks.close()

    @asynccontextmanager
    async def _lifespan(self, app: Any) -> AsyncIterator[None]:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(self._expire_idle_sessions)
            if self.local:
                incoming = self.sessions.root / "incoming"
                self.local_backend = LocalSD(model=self.settings.model, results_dir=incoming)
                models = await anyio.to_thread.run_sync(
                    local_models, self.settings.model, self.settings.models_dir or None
                )
                if len(models) > 1:  # each loads on first use (and stays loaded)
                    self.local_choice = ModelChoice({self.settings.model: self.local_backend, **{
                        name: LocalSD(model=name, results_dir=incoming) for name in models[1:]}})
                tasks.start_soon(self._warm_up, self.local_backend)
            try:
                yield
            finally:
                tasks.cancel_scope.cancel()
                with anyio.CancelScope(shield=True):
                    await self.sessions.close_all()
                    if self.local_choice is not None:
                        await self.local_choice.aclose()
                    elif self.local_backend is not None:
                        await self.local_backend.aclose()

    async def _expire_idle_sessions(self) -> None:
        """Every few seconds: renew the OIDC tokens that are due (a refused renewal
        ends its session), and close the sessions idle too long."""
        interval = min(TOKEN_CHECK_INTERVAL, self.sessions.idle_timeout / 2)
        while True:
            await anyio.sleep(interval)
            await self.sessions.renew_tokens()
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
        return self.local_choice or self.local_backend

    def _describe_backend(self, request: gr.Request) -> str:
        """The line under the title, once per page load: who is signed in, and what
        makes the images (or, when the service was not usable at sign-in, that)."""
        backend: Backend | None = None
        signed_in = ""
        if request.username and (session := self.sessions.get(request.username)):
            backend = session.backend
            if session.account:
                signed_in = f"Signed in as **{_markdown_text(session.account)}** · "
            if backend is None and session.backend_error is not None:
                return f"{signed_in}⚠ {SERVICE_NOT_READY}"
        elif self.local:
            backend = self.local_backend
        if isinstance(backend, (SpillOver, ModelChoice)):
            backend.page_opened()  # warm on demand: someone is there
        description = backend.description if backend else self._backend_summary()
        return f"{signed_in}Images made by {_markdown_text(description)}"

    def _backend_summary(self) -> str:
        if self.local:
            return "the local backend (this computer)"
        endpoint = _public_url(self.settings.oscar_endpoint)
        return f"OSCAR service {self.settings.service!r} at {endpoint}"

    def _login_message(self) -> str | None:
        if self.login is None:
            return None
        if self.local:
            return "Log in with the user name and password you were given for this app."
        where = _public_url(self.settings.oscar_endpoint)
        if self.settings.oidc_enabled:
            return f"Sign in to make images on the OSCAR cluster at {where}."
        return f"Log in with the OSCAR account of the cluster at {where}."

    def _health(self) -> dict[str, object]:
        health: dict[str, object] = {
            "mode": "local" if self.local else "cluster", "sessions": len(self.sessions),
        }
        if self.drain.draining:
            health.update(status="draining", running=self.drain.running)
        return health

    @property
    def drain(self) -> Drain:
        """The runs in flight; :meth:`Drain.begin` on SIGTERM (see ``serve``)."""
        return self.handlers.drain


def _markdown_text(text: str) -> str:
    """``text`` as plain words in the page's Markdown: HTML escaped, and the characters
    Markdown reads as formatting too."""
    escaped = html.escape(text)
    for mark in "\\`*_[]":
        escaped = escaped.replace(mark, "\\" + mark)
    return escaped


def _public_url(url: str) -> str:
    """``url`` without any user:password part."""
    parts = urlsplit(url)
    if not parts.hostname:
        return url
    host = parts.hostname + (f":{parts.port}" if parts.port else "")
    return parts._replace(netloc=host).geturl()
