"""Who is this request? The app's own login routes and session cookie.

Gradio's built-in ``auth=`` keys everything by user name; OSCAR has one
basic-auth account, so that would put everybody who uses it in one session.
Instead the app serves its own login and passes Gradio an
``auth_dependency`` (gradio ``routes.py``: every route but the login ones
asks it, and ``gr.Request.username`` is what it returns):

- ``GET /login``: the login page (``login_page.py``);
- ``POST /login``: user name and password (also what gradio_client sends);
- ``GET /login/oidc`` → the provider → ``GET /auth/callback``: OIDC sign-in;
- ``GET /logout``: ends this login's session only.

A successful login opens a new session under a random key and sets the
``oscar-sd-session`` cookie (HttpOnly, SameSite=Lax, Secure over HTTPS, path
the root path) to a second random value, the ticket, that maps to that key.
The key is what Gradio sees as the user name (it is put in the page's
config, so it is not the secret); the ticket never leaves the cookie.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Protocol

from gradio.route_utils import get_root_url
from starlette.requests import HTTPConnection, Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from .lasting import LastingSignIns
from .login import LoginRefused
from .login_page import render_login_page
from .oidc import OidcSignIn, SignInFailed
from .session_watch import WHY, alive_route
from .sessions import Sessions, UserSession

log = logging.getLogger("oscar_sd.ui")

COOKIE = "oscar-sd-session"
STATE_COOKIE = "oscar-sd-signin"


class PasswordLogin(Protocol):
    async def with_password(self, user: str, password: str) -> UserSession: ...


class SignIn:
    """The login routes, the session cookie, and Gradio's ``auth_dependency``."""

    def __init__(
        self,
        sessions: Sessions,
        *,
        root_path: str,
        message: str,
        password_login: PasswordLogin | None,
        oidc: OidcSignIn | None,
        oidc_with_token: Callable[..., Awaitable[UserSession]] | None = None,
        oidc_label: str = "Sign in with EGI Check-in",
        lasting: LastingSignIns | None = None,
    ) -> None:
        self.sessions = sessions
        self.base = root_path.rstrip("/")
        self.message = message
        self.password_login = password_login
        self.oidc = oidc
        self.oidc_with_token = oidc_with_token
        self.oidc_label = oidc_label
        self._tickets: dict[str, str] = {}  # cookie value -> session key
        #: Seals OIDC sign-ins into the cookie, so they outlive the process (lasting.py).
        self.lasting = lasting
        self.cookie_name = COOKIE

    def known_ticket(self, ticket: str) -> str | None:
        """The session key this process gave ``ticket``, if any."""
        return self._tickets.get(ticket)

    def adopt(self, ticket: str, session: UserSession) -> None:
        """``ticket`` (a sealed sign-in brought back) now names ``session``."""
        self._tickets[ticket] = session.key

    # -- who is it ------------------------------------------------------------------

    def identify(self, connection: HTTPConnection) -> str | None:
        """The session key of a request: open, or ended by the app (to say why); else None."""
        ticket = connection.cookies.get(COOKIE)
        key = self._tickets.get(ticket or "")
        if key is None:
            return None
        if self.sessions.get(key) is None and self.sessions.ended_reason(key) is None:
            self._tickets.pop(ticket or "", None)
            return None
        return key

    def session_state(self, connection: HTTPConnection) -> str | None:
        """None while the request's session is open; else why not (``session_watch.WHY``)."""
        ticket = connection.cookies.get(COOKIE)
        if not ticket:
            return "signed-out"
        key = self.identify(connection)
        if key is None:
            return "restarted"  # a cookie this process never issued (or long forgotten)
        return None if self.sessions.get(key) is not None else "ended"

    def auth_dependency(self, request: Request) -> str | None:
        """For ``launch(auth_dependency=...)``: ``request.username`` becomes the session key."""
        return self.identify(request)

    def routes(self) -> list[Route]:
        return [
            Route("/login", self.login_page, methods=["GET"]),
            Route("/login/", self.login_page, methods=["GET"]),
            Route("/login", self.login_with_password, methods=["POST"]),
            Route("/login/", self.login_with_password, methods=["POST"]),
            Route("/login/oidc", self.login_with_oidc, methods=["GET"]),
            Route("/auth/callback", self.oidc_callback, methods=["GET"]),
            Route("/logout", self.logout, methods=["GET"]),
            alive_route(self.session_state),
        ]

    # -- routes -----------------------------------------------------------------------

    async def login_page(self, request: Request) -> Response:
        key = self.identify(request)
        if key is not None and self.sessions.get(key) is not None:
            return RedirectResponse(f"{self.base}/", status_code=303)
        error = self.sessions.ended_reason(key) if key else None
        why = WHY.get(request.query_params.get("why", ""))
        return self._page(error=error or why or request.query_params.get("error"))

    async def login_with_password(self, request: Request) -> Response:
        form = await request.form()
        user = str(form.get("username") or "").strip()
        password = str(form.get("password") or "")
        del form
        wants_page = "text/html" in request.headers.get("accept", "")
        if self.password_login is None:
            return self._refused(wants_page, LoginRefused("Sign in with the button above."), "")
        try:
            session = await self.password_login.with_password(user, password)
        except LoginRefused as refused:
            return self._refused(wants_page, refused, user)
        finally:
            del password
        response: Response = (
            RedirectResponse(f"{self.base}/", status_code=303)
            if wants_page
            else JSONResponse({"success": True})
        )
        self._start(request, response, session)
        return response

    async def login_with_oidc(self, request: Request) -> Response:
        if self.oidc is None:
            return self._page(status=404, error="This app has no OIDC sign-in configured.")
        redirect_uri = self._public_url(request, "/login/oidc") + "/auth/callback"
        try:
            url, state = await self.oidc.begin(redirect_uri)
        except SignInFailed as failed:
            return self._page(status=503, error=str(failed))
        response = RedirectResponse(url, status_code=302)
        # Binds the sign-in to this browser: the callback must come back with it.
        response.set_cookie(STATE_COOKIE, state, max_age=600, httponly=True, samesite="lax",
                            path=self.base or "/", secure=request.url.scheme == "https")
        return response

    async def oidc_callback(self, request: Request) -> Response:
        state = request.query_params.get("state", "")
        code = request.query_params.get("code", "")
        if self.oidc is None or self.oidc_with_token is None:
            return self._page(status=404, error="This app has no OIDC sign-in configured.")
        if not state or not secrets.compare_digest(state, request.cookies.get(STATE_COOKIE, "")):
            return self._page(status=400, error="That sign-in did not start here. Sign in again.")
        if not code:
            said = request.query_params.get("error_description") or "the sign-in was cancelled"
            return self._page(status=401, error=f"Not signed in: {said}.")
        try:
            signed_in = await self.oidc.finish(state, code)
            session = await self.oidc_with_token(signed_in)
        except (SignInFailed, LoginRefused) as failed:
            status = getattr(failed, "status", 401)
            return self._page(status=status, error=str(failed))
        response = RedirectResponse(f"{self.base}/", status_code=303)
        response.delete_cookie(STATE_COOKIE, path=self.base or "/")
        self._start(request, response, session)
        return response

    async def logout(self, request: Request) -> Response:
        """End this login's session (its backend and images) and nobody else's."""
        ticket = request.cookies.get(COOKIE, "")
        key = self._tickets.pop(ticket, None)
        for other in [t for t, k in self._tickets.items() if k == key]:
            del self._tickets[other]  # its earlier (rotated) cookies
        if self.lasting is not None:
            self.lasting.revoke(ticket, key)
        if key is not None:
            await self.sessions.close(key, "logout")
        response = RedirectResponse(f"{self.base}/login", status_code=302)
        response.delete_cookie(COOKIE, path=self.base or "/")
        return response

    # -- helpers ----------------------------------------------------------------------

    def _start(self, request: Request, response: Response, session: UserSession) -> None:
        sealed = self.lasting.ticket_for(session) if self.lasting is not None else None
        ticket = sealed or secrets.token_urlsafe(32)
        self._tickets[ticket] = session.key
        self.set_cookie(request, response, ticket)

    def set_cookie(self, request: HTTPConnection, response: Response, ticket: str) -> None:
        response.set_cookie(
            COOKIE, ticket, httponly=True, samesite="lax", path=self.base or "/",
            secure=request.url.scheme == "https"
            or request.headers.get("x-forwarded-proto", "").startswith("https"),
        )

    def _refused(self, wants_page: bool, refused: LoginRefused, user: str) -> Response:
        if wants_page:
            return self._page(status=refused.status, error=str(refused), username=user)
        return JSONResponse({"error": str(refused)}, status_code=refused.status)

    def _page(self, *, status: int = 200, error: str | None = None, username: str = "") -> Response:
        html = render_login_page(
            message=self.message,
            password_form=self.password_login is not None,
            oidc_label=self.oidc_label if self.oidc is not None else None,
            error=error,
            username=username,
        )
        return HTMLResponse(html, status_code=status,
                            headers={"Cache-Control": "no-store"})

    def _public_url(self, request: Request, route_path: str) -> str:
        """The app's public base URL (proxy headers and root path respected)."""
        return get_root_url(request=request, route_path=route_path, root_path=self.base or None)


class LoginRedirect:
    """The page itself, without a login, sends the browser to the login page.

    (With ``auth_dependency`` Gradio answers such a request with a bare 401.)
    """

    def __init__(self, app: ASGIApp, signin: SignIn) -> None:
        self.app = app
        self.signin = signin

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in ("GET", "HEAD"):
            path = scope["path"]
            base = self.signin.base
            if base and path.startswith(base):
                path = path[len(base):]
            key = self.signin.identify(HTTPConnection(scope)) if path in ("", "/") else ""
            if key is None or (key and self.signin.sessions.get(key) is None):
                # A tab reloaded after its session ended (an app restart, an expiry)
                # hears why, as the page's own session watch would have said it; a
                # first visit (no cookie) is just sent to sign in.
                connection = HTTPConnection(scope)
                why = self.signin.session_state(connection) if connection.cookies.get(
                    COOKIE) else None
                query = f"?why={why}" if why else ""
                response = RedirectResponse(f"{base}/login{query}", status_code=302)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
