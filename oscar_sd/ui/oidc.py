"""The page's OIDC sign-in: authorization code flow with PKCE, through authlib.

1. ``/login/oidc``: :meth:`OidcSignIn.begin` makes a state, a nonce and a PKCE
   verifier, remembers them for ten minutes, and gives the provider's
   authorization URL (EGI Check-in by default) to send the browser to.
2. ``/auth/callback``: :meth:`OidcSignIn.finish` checks the state, trades the
   code (with the verifier) for tokens at the token endpoint, and reads who
   signed in from the userinfo endpoint.

The access token then goes to OSCAR as ``Bearer``; the refresh token
(``offline_access``) renews it (:class:`~oscar_sd.OidcToken`). Scopes: ``openid
profile email offline_access entitlements`` by default, the last one because
OSCAR reads group membership (its ``oidc_groups``) from the ``entitlements``
claim (grycap/oscar ``pkg/utils/auth/oidc.go``, ``EGIClaims``), which EGI
Check-in releases for the ``entitlements`` scope. The groups the sign-in
carries are kept (:attr:`SignedIn.groups`), read as OSCAR reads them, so that a
person OSCAR refuses for their groups can be told which groups they have.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

import httpx
from authlib.common.security import generate_token
from authlib.integrations.httpx_client import AsyncOAuth2Client

from .._settings import Settings
from .._tokens import OidcToken

#: How long a sign-in may take between leaving for the provider and coming back.
PENDING_TTL = 600.0


class SignInFailed(Exception):
    """The OIDC sign-in did not complete; the message is for the person."""


@dataclass
class Pending:
    redirect_uri: str
    code_verifier: str
    nonce: str
    started: float


@dataclass
class SignedIn:
    """Who signed in, and their token (renewing itself)."""

    subject: str
    name: str
    token: OidcToken
    #: The groups OSCAR will see in this sign-in (:func:`egi_groups`).
    groups: tuple[str, ...] = ()


#: EGI's group URNs: ``urn:mace:egi.eu:group:<group>[:<subgroup>...][:role=<role>]#<issuer>``.
EGI_GROUP_PREFIX = "urn:mace:egi.eu:group"


def egi_groups(claims: dict[str, Any]) -> tuple[str, ...]:
    """The groups OSCAR reads from a userinfo answer, as its ``getGroupsEGI`` does
    (grycap/oscar ``pkg/utils/auth/oidc.go``): field 4 of each lowercased
    ``entitlements`` URN that starts with ``urn:mace:egi.eu:group``."""
    groups: list[str] = []
    entitlements = claims.get("entitlements")
    for urn in entitlements if isinstance(entitlements, list) else []:
        fields = str(urn).strip().lower().split(":")
        if ":".join(fields).startswith(EGI_GROUP_PREFIX) and len(fields) >= 5:
            groups.append(fields[4])
    return tuple(dict.fromkeys(groups))


class OidcSignIn:
    """One app's OIDC client (``OSCAR_SD_OIDC_*``)."""

    def __init__(self, settings: Settings) -> None:
        self.issuer = settings.oidc_issuer.rstrip("/")
        self.client_id = settings.oidc_client_id
        self._client_secret = settings.oidc_client_secret.get_secret_value() or None
        self.scopes = settings.oidc_scopes
        self.verify_ssl = settings.verify_ssl
        self._metadata: dict[str, Any] | None = None
        self._pending: dict[str, Pending] = {}

    def _client(self, **options: Any) -> AsyncOAuth2Client:
        return AsyncOAuth2Client(
            client_id=self.client_id,
            client_secret=self._client_secret,
            scope=self.scopes,
            code_challenge_method="S256",
            verify=self.verify_ssl,
            timeout=15.0,
            **options,
        )

    async def metadata(self) -> dict[str, Any]:
        """The provider's discovery document (read once)."""
        if self._metadata is None:
            url = f"{self.issuer}/.well-known/openid-configuration"
            try:
                async with httpx.AsyncClient(verify=self.verify_ssl, timeout=15.0) as http:
                    answer = await http.get(url)
                    answer.raise_for_status()
                    self._metadata = answer.json()
            except (httpx.HTTPError, ValueError):
                raise SignInFailed(
                    f"Cannot reach the sign-in service at {self.issuer}. Try again in a moment."
                ) from None
        return self._metadata

    async def begin(self, redirect_uri: str) -> tuple[str, str]:
        """Start a sign-in: the provider's URL to send the browser to, and the state."""
        self._forget_stale()
        metadata = await self.metadata()
        state, verifier, nonce = generate_token(30), generate_token(48), secrets.token_urlsafe(16)
        async with self._client(redirect_uri=redirect_uri) as oauth:
            url, _ = oauth.create_authorization_url(
                metadata["authorization_endpoint"], state=state, code_verifier=verifier,
                nonce=nonce,
            )
        self._pending[state] = Pending(redirect_uri, verifier, nonce, time.monotonic())
        return url, state

    async def finish(self, state: str, code: str) -> SignedIn:
        """Complete a sign-in the provider sent back: tokens and who it is."""
        pending = self._pending.pop(state, None)
        if pending is None or time.monotonic() - pending.started > PENDING_TTL:
            raise SignInFailed("That sign-in took too long or was already used. Sign in again.")
        metadata = await self.metadata()
        async with self._client(redirect_uri=pending.redirect_uri) as oauth:
            try:
                answer = await oauth.fetch_token(
                    metadata["token_endpoint"], code=code,
                    code_verifier=pending.code_verifier,
                )
                claims = (await oauth.get(metadata["userinfo_endpoint"])).json()
            except Exception:
                raise SignInFailed(
                    "The sign-in service did not accept this sign-in. Sign in again."
                ) from None
        token = OidcToken.from_response(
            dict(answer), token_endpoint=metadata["token_endpoint"], client_id=self.client_id,
            client_secret=self._client_secret, verify_ssl=self.verify_ssl,
        )
        subject = str(claims.get("sub") or "")
        if not subject:
            raise SignInFailed("The sign-in service did not say who you are. Sign in again.")
        name = str(claims.get("name") or claims.get("email") or subject)
        return SignedIn(subject, name, token, egi_groups(claims))

    def _forget_stale(self) -> None:
        now = time.monotonic()
        for state, pending in list(self._pending.items()):
            if now - pending.started > PENDING_TTL:
                del self._pending[state]
