"""An OIDC provider on loopback for the tests: ``oidc-provider-mock`` from PyPI.

It speaks the real protocol (discovery, authorization code flow, token
endpoint with refresh, userinfo), as EGI Check-in does for OSCAR. Anyone may
sign in as any ``sub`` on its form, or programmatically with :meth:`sign_in`.
Access tokens live ``token_lifetime`` seconds; :meth:`revoke` withdraws every
token of a user, so that their next refresh is refused.

Groups: EGI Check-in releases a person's groups as ``entitlements`` URNs
(``urn:mace:egi.eu:group:<group>:role=member#aai.egi.eu``) for the
``entitlements`` scope, and OSCAR reads that claim (grycap/oscar
``pkg/utils/auth/oidc.go``, ``EGIClaims``, ``getGroupsEGI``). :meth:`set_groups`
gives a user such URNs (the mock's ``PUT /users/<sub>``).

What it does not do: verify PKCE (it ignores ``code_challenge``), or gate claims
by scope beyond the standard ones: it releases ``entitlements`` whatever the
scopes, and drops scopes it does not know (refresh tokens come anyway).
"""

from __future__ import annotations

import logging
import threading
import warnings
from contextlib import ExitStack
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

with warnings.catch_warnings():  # it still imports authlib.jose, deprecated in authlib 1.7
    warnings.simplefilter("ignore")
    from oidc_provider_mock import run_server_in_thread

#: The redirect URI used for programmatic sign-ins (nothing listens there).
PROGRAMMATIC_REDIRECT = "http://127.0.0.1:9/callback"


class OidcProviderDouble:
    """A started-on-demand OIDC provider; ``issuer`` is its base URL."""

    def __init__(self, token_lifetime: float = 3600.0) -> None:
        self.token_lifetime = token_lifetime
        self._stack = ExitStack()
        self._port = 0
        self._lock = threading.Lock()
        # The mock logs every request through werkzeug; the tests need none of it.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        logging.getLogger("oidc_provider_mock").setLevel(logging.ERROR)

    def start(self) -> OidcProviderDouble:
        server = self._stack.enter_context(
            run_server_in_thread(
                port=0, access_token_max_age=timedelta(seconds=self.token_lifetime)
            )
        )
        self._port = server.server_port
        return self

    def stop(self) -> None:
        self._stack.close()

    def __enter__(self) -> OidcProviderDouble:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def issuer(self) -> str:
        return f"http://localhost:{self._port}"

    @property
    def token_endpoint(self) -> str:
        return f"{self.issuer}/oauth2/token"

    @property
    def userinfo_endpoint(self) -> str:
        return f"{self.issuer}/userinfo"

    def userinfo(self, access_token: str) -> dict[str, Any] | None:
        """The claims of a valid token, or None: how OSCAR checks a bearer token."""
        response = httpx.get(
            self.userinfo_endpoint, headers={"Authorization": f"Bearer {access_token}"}
        )
        return response.json() if response.status_code == 200 else None

    def sign_in(self, sub: str, client_id: str = "oscar-sd-tests",
                client_secret: str = "secret") -> dict[str, Any]:
        """Sign ``sub`` in with the authorization code flow; the token endpoint's answer."""
        params = {
            "client_id": client_id, "redirect_uri": PROGRAMMATIC_REDIRECT,
            "response_type": "code", "scope": "openid profile email offline_access",
            "state": "tests",
        }
        answer = httpx.post(f"{self.issuer}/oauth2/authorize", params=params,
                            data={"sub": sub})
        if answer.status_code != 302:
            raise RuntimeError(f"the provider refused to sign {sub} in: {answer.status_code}")
        code = parse_qs(urlsplit(answer.headers["location"]).query)["code"][0]
        token = httpx.post(
            self.token_endpoint, auth=(client_id, client_secret),
            data={"grant_type": "authorization_code", "code": code,
                  "redirect_uri": PROGRAMMATIC_REDIRECT})
        token.raise_for_status()
        return token.json()

    def set_groups(self, sub: str, groups: list[str]) -> None:
        """``sub`` signs in from now on as a member of ``groups`` (EGI ``entitlements``)."""
        urns = [f"urn:mace:egi.eu:group:{group}:role=member#aai.egi.eu" for group in groups]
        httpx.put(f"{self.issuer}/users/{sub}",
                  json={"email": sub, "entitlements": urns}).raise_for_status()

    def revoke(self, sub: str) -> None:
        """Withdraw every access and refresh token of ``sub``."""
        httpx.post(f"{self.issuer}/users/{sub}/revoke-tokens").raise_for_status()
