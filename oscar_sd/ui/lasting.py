"""OIDC sign-ins that outlive the app process: a restart, or the next visit on another replica.

At an OIDC sign-in the session cookie holds, instead of a random ticket, a
token sealed by ``sealed.py`` (encrypted and signed with
``OSCAR_SD_SECRET_KEY``) with what renewing the sign-in needs: the refresh
token, its endpoint and client id, the last access token and who it is. Never
a password, never the client secret or a storage key. A password login keeps
its random ticket: the password is not kept anywhere, so it ends with the
process (and its page says so, ``session_watch.py``).

:class:`RestoreSignIn` (a middleware) meets a cookie that this process did not
issue: it opens the seal and signs the person in again with it, as at the
callback, before the request goes on. When the provider hands out a new
refresh token on renewal (rotation), the next response carries a new cookie.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import anyio
from starlette.requests import HTTPConnection
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .._tokens import OidcToken
from .oidc import SignedIn
from .sealed import Sealer, TokenExpired, TokenInvalid
from .sessions import UserSession

if TYPE_CHECKING:
    from .signin import SignIn

log = logging.getLogger("oscar_sd.ui")

#: Cookie values that are sealed sign-ins start so.
SEALED = "s."
#: How long a sealed sign-in may be brought back (the provider may refuse sooner).
LIFETIME = 30 * 24 * 3600.0
#: How many failed restores are remembered (so that one is not tried on every request).
FAILED_MEMORY = 10_000


class LastingSignIns:
    """Seals OIDC sign-ins into cookie values, and signs them in again."""

    def __init__(
        self, sealer: Sealer, *, client_secret: str | None, verify_ssl: bool = True
    ) -> None:
        self.sealer = sealer
        self._client_secret = client_secret
        self._verify_ssl = verify_ssl
        self._locks: dict[str, anyio.Lock] = {}
        self._failed: dict[str, None] = {}
        # session key -> the refresh token its cookie holds (to notice a rotation).
        self._sealed_refresh: dict[str, Any] = {}

    def ticket_for(self, session: UserSession) -> str | None:
        """A sealed cookie value for an OIDC session; None for a password login."""
        if session.token is None:
            return None
        renewal = session.token.renewal()
        self._sealed_refresh[session.key] = renewal["refresh_token"]
        payload = {"name": session.account, "token": renewal}
        return SEALED + self.sealer.seal(payload, LIFETIME)

    def rotated(self, session: UserSession) -> bool:
        """True when the session's refresh token is no longer the one its cookie holds."""
        if session.token is None or session.key not in self._sealed_refresh:
            return False
        return session.token.renewal()["refresh_token"] != self._sealed_refresh[session.key]

    async def restore(self, ticket: str, signin: SignIn) -> str | None:
        """Sign a sealed ticket in again; its new session key, or None."""
        if ticket in self._failed or signin.oidc_with_token is None:
            return None
        lock = self._locks.setdefault(ticket, anyio.Lock())
        async with lock:  # one restore per cookie, however many requests arrive with it
            known = signin.known_ticket(ticket)
            if known is not None:
                return known
            try:
                payload = self.sealer.open(ticket[len(SEALED):])
                token = OidcToken.from_renewal(
                    payload["token"], client_secret=self._client_secret,
                    verify_ssl=self._verify_ssl,
                )
                await token.fresh()  # a sign-in the provider no longer renews ends here
                name = str(payload.get("name") or "")
                session = await signin.oidc_with_token(SignedIn(name, name, token))
            except (TokenInvalid, TokenExpired, KeyError, TypeError, ValueError):
                return self._forget(ticket, "not a sign-in of this app, or too old")
            except Exception as exc:  # refused, or the provider or cluster unreachable
                return self._forget(ticket, type(exc).__name__)
            finally:
                self._locks.pop(ticket, None)
            self._sealed_refresh[session.key] = token.renewal()["refresh_token"]
            signin.adopt(ticket, session)
            log.info("an OIDC sign-in came back from its cookie (restart or another replica)")
            return session.key

    def _forget(self, ticket: str, why: str) -> None:
        log.info("a sealed sign-in could not come back (%s)", why)
        if len(self._failed) >= FAILED_MEMORY:
            self._failed.pop(next(iter(self._failed)))
        self._failed[ticket] = None
        return None

    def revoke(self, ticket: str, key: str | None) -> None:
        """A logout: this cookie never comes back in this process (another replica
        would still take it until it expires: a logout there ends it there)."""
        if ticket.startswith(SEALED):
            self._forget(ticket, "logged out")
        if key is not None:
            self._sealed_refresh.pop(key, None)


class RestoreSignIn:
    """Brings sealed sign-ins back before a request is served; renews rotated cookies."""

    def __init__(self, app: ASGIApp, signin: SignIn) -> None:
        self.app = app
        self.signin = signin

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        lasting = self.signin.lasting
        if scope["type"] not in ("http", "websocket") or lasting is None:
            await self.app(scope, receive, send)
            return
        connection = HTTPConnection(scope)
        ticket = connection.cookies.get(self.signin.cookie_name, "")
        key = self.signin.known_ticket(ticket) if ticket else None
        if ticket.startswith(SEALED) and key is None:
            key = await lasting.restore(ticket, self.signin)
        session = self.signin.sessions.get(key) if key else None
        if scope["type"] != "http" or session is None or not lasting.rotated(session):
            await self.app(scope, receive, send)
            return
        fresh = lasting.ticket_for(session)
        assert fresh is not None
        self.signin.adopt(fresh, session)
        cookie = Response()
        self.signin.set_cookie(connection, cookie, fresh)
        headers = [h for h in cookie.raw_headers if h[0] == b"set-cookie"]

        async def with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *headers]}
            await send(message)

        await self.app(scope, receive, with_cookie)
