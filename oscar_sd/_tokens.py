"""An OIDC access token that renews itself before it expires.

>>> token = OidcToken(
...     access_token, refresh_token=refresh_token,
...     token_endpoint="https://aai.egi.eu/auth/realms/egi/protocol/openid-connect/token",
...     client_id="my-client",
... )
>>> bearer = await token.fresh()      # refreshed first when it has under 60 s left

OSCAR takes an OIDC access token as ``Bearer`` (EGI Check-in by default);
such tokens live minutes to an hour. With its refresh token (scope
``offline_access``) a new one is asked for at least :data:`LEEWAY` seconds
before the old one runs out, so no request ever leaves with a token about to
expire. A refresh the provider refuses (revoked, expired, the person signed
out) turns into :class:`SignInExpired`, and every later use raises it too.

Neither token ever reaches a log line or an error message.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from typing import Any

import anyio
from authlib.integrations.base_client.errors import OAuthError
from authlib.integrations.httpx_client import AsyncOAuth2Client
from authlib.oauth2.rfc6749.errors import OAuth2Error

from ._errors import ClusterUnreachableError, SignInExpired

log = logging.getLogger("oscar_sd.tokens")

#: Refresh when fewer seconds than this are left on the access token.
LEEWAY = 60.0


class OidcToken:
    """An access token, with what it takes to renew it (all optional but the token)."""

    def __init__(
        self,
        access_token: str,
        *,
        refresh_token: str | None = None,
        expires_at: float | None = None,
        token_endpoint: str | None = None,
        client_id: str | None = None,
        client_secret: str | None = None,
        verify_ssl: bool = True,
        leeway: float = LEEWAY,
    ) -> None:
        if refresh_token and not (token_endpoint and client_id):
            raise ValueError(
                "A refresh token needs its token endpoint and client id "
                "(OSCAR_SD_TOKEN_ENDPOINT, OSCAR_SD_OIDC_CLIENT_ID)."
            )
        self._access_token = access_token
        self._refresh_token = refresh_token
        # Unknown expiry: read the JWT's exp claim if it is one.
        self.expires_at = expires_at if expires_at is not None else _jwt_expiry(access_token)
        self.token_endpoint = token_endpoint
        self.client_id = client_id
        self._client_secret = client_secret
        self.verify_ssl = verify_ssl
        self.leeway = leeway
        self.refreshes = 0
        self._refused: SignInExpired | None = None
        self._lock: anyio.Lock | None = None

    @classmethod
    def from_response(cls, response: dict[str, Any], **options: Any) -> OidcToken:
        """From a token endpoint's answer (``access_token``, ``expires_in``, ``refresh_token``)."""
        expires_in = response.get("expires_in")
        return cls(
            str(response["access_token"]),
            refresh_token=response.get("refresh_token"),
            expires_at=time.time() + float(expires_in) if expires_in is not None else None,
            **options,
        )

    def __repr__(self) -> str:  # never the tokens themselves
        return f"OidcToken(expires_at={self.expires_at}, refreshable={self.refreshable})"

    def renewal(self) -> dict[str, Any]:
        """What it takes to renew this sign-in later, in another process: for the web
        app's sealed (encrypted, signed) cookie only; never log or show it. The client
        secret is not in it (the app has it in its settings)."""
        return {
            "access_token": self._access_token,
            "refresh_token": self._refresh_token,
            "expires_at": self.expires_at,
            "token_endpoint": self.token_endpoint,
            "client_id": self.client_id,
        }

    @classmethod
    def from_renewal(
        cls, renewal: dict[str, Any], *, client_secret: str | None, verify_ssl: bool = True
    ) -> OidcToken:
        """The token again from :meth:`renewal` (renewed on first use if it is due)."""
        return cls(
            str(renewal.get("access_token") or ""),
            refresh_token=renewal.get("refresh_token"),
            expires_at=renewal.get("expires_at"),
            token_endpoint=renewal.get("token_endpoint"),
            client_id=renewal.get("client_id"),
            client_secret=client_secret,
            verify_ssl=verify_ssl,
        )

    @property
    def refreshable(self) -> bool:
        return bool(self._refresh_token)

    @property
    def expired(self) -> bool:
        """True once a refresh was refused: the person must sign in again."""
        return self._refused is not None

    def refresh_due(self, now: float | None = None) -> bool:
        """True when the token should be renewed now (under ``leeway`` seconds left)."""
        if not self._refresh_token:
            return False
        if self.expires_at is None:
            return True  # unknown lifetime: renew once to learn it
        return (now or time.time()) >= self.expires_at - self.leeway

    async def fresh(self) -> str:
        """The access token, renewed first when it is due; :class:`SignInExpired` if refused."""
        if self._refused is not None:
            raise self._refused
        if not self.refresh_due():
            return self._access_token
        if self._lock is None:
            self._lock = anyio.Lock()
        async with self._lock:
            if self._refused is not None:
                raise self._refused
            if self.refresh_due():  # not renewed meanwhile by another request
                await self._refresh()
        return self._access_token

    async def _refresh(self) -> None:
        assert self.token_endpoint and self.client_id
        async with AsyncOAuth2Client(
            client_id=self.client_id,
            client_secret=self._client_secret,
            verify=self.verify_ssl,
            timeout=15.0,
        ) as oauth:
            try:
                answer = await oauth.refresh_token(
                    self.token_endpoint, refresh_token=self._refresh_token
                )
            except (OAuthError, OAuth2Error) as exc:
                self._refused = SignInExpired()
                log.info("the sign-in provider refused the refresh (%s)", _error_code(exc))
                raise self._refused from None
            except Exception as exc:  # network: keep the old token, try again next time
                raise ClusterUnreachableError(
                    "Cannot reach the sign-in service to renew your sign-in "
                    f"({type(exc).__name__}). Try again in a moment."
                ) from None
        self._access_token = str(answer["access_token"])
        # Providers may rotate the refresh token; keep the old one when they do not.
        self._refresh_token = answer.get("refresh_token") or self._refresh_token
        expires_in = answer.get("expires_in")
        self.expires_at = (
            time.time() + float(expires_in)
            if expires_in is not None
            else _jwt_expiry(self._access_token)
        )
        self.refreshes += 1
        log.info("access token renewed; valid for %s s", expires_in)


def _error_code(exc: Exception) -> str:
    return str(getattr(exc, "error", "") or type(exc).__name__)


def _jwt_expiry(token: str) -> float | None:
    """The ``exp`` claim of a JWT access token (unverified: only to plan the refresh)."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        padded = parts[1] + "=" * (-len(parts[1]) % 4)
        claims = json.loads(base64.urlsafe_b64decode(padded))
        return float(claims["exp"])
    except (ValueError, KeyError, TypeError):
        return None
