"""Which cluster and account a command uses: flags, environment, a password prompt."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from .._settings import Settings
from .._tokens import OidcToken
from ._common import UsageError


@dataclass(frozen=True)
class Cluster:
    """Where to connect and as whom, resolved from options, environment and prompt."""

    endpoint: str
    service: str
    verify_ssl: bool
    user: str | None = None
    # Kept out of repr() so that no debug print or traceback shows them.
    password: str | None = field(default=None, repr=False)
    token: str | OidcToken | None = field(default=None, repr=False)

    def credentials(self) -> dict[str, Any]:
        return {"user": self.user, "password": self.password, "token": self.token}


def load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        error = exc.errors()[0]
        name = ".".join(str(part) for part in error["loc"])
        raise UsageError(
            f"the setting {name} from the environment is invalid: {error['msg']}"
        ) from None


def resolve_cluster(
    args: argparse.Namespace, settings: Settings, secrets: list[str], *, required: bool
) -> Cluster | None:
    """The cluster and account to use; None when no endpoint is set and none is ``required``."""
    endpoint = (args.endpoint or settings.oscar_endpoint).strip()
    if not endpoint:
        if required:
            raise UsageError(
                "no OSCAR cluster given: pass --endpoint URL or set the oscar_endpoint variable"
            )
        return None
    if not endpoint.startswith(("http://", "https://")):
        raise UsageError(f"the endpoint must be an http:// or https:// URL, not {endpoint!r}")

    place = {
        "endpoint": endpoint.rstrip("/"),
        "service": args.service or settings.services[0],
        "verify_ssl": settings.verify_ssl and not args.insecure,
    }
    token = args.token or os.environ.get("OSCAR_SD_TOKEN")
    refresh_token = os.environ.get("OSCAR_SD_REFRESH_TOKEN")
    if refresh_token:
        secrets.append(refresh_token)
        if token:
            secrets.append(token)
        if not settings.oidc_client_id:
            raise UsageError(
                "OSCAR_SD_REFRESH_TOKEN needs the client it was issued to: set "
                "OSCAR_SD_OIDC_CLIENT_ID (and OSCAR_SD_OIDC_CLIENT_SECRET if it has one)"
            )
        client_secret = settings.oidc_client_secret.get_secret_value() or None
        if client_secret:
            secrets.append(client_secret)
        renewing = OidcToken(
            token or "",
            refresh_token=refresh_token,
            # Without an access token: renew at once.
            expires_at=None if token else 0.0,
            token_endpoint=settings.default_token_endpoint(),
            client_id=settings.oidc_client_id,
            client_secret=client_secret,
            verify_ssl=place["verify_ssl"],
        )
        return Cluster(**place, token=renewing)
    if token:
        secrets.append(token)
        return Cluster(**place, token=token)

    interactive = sys.stdin.isatty()
    user = args.user or os.environ.get("OSCAR_SD_USER")
    if not user and interactive:
        user = input(f"OSCAR user at {place['endpoint']}: ").strip()
    if not user:
        raise UsageError(
            "no OSCAR user: pass --user or set OSCAR_SD_USER (or give a token in OSCAR_SD_TOKEN)"
        )
    password = os.environ.get("OSCAR_SD_PASSWORD")
    if password is None and interactive:
        password = getpass.getpass(f"Password of {user} at {place['endpoint']}: ")
    if not password:
        raise UsageError(
            f"no password for {user}: set OSCAR_SD_PASSWORD, or run in a terminal to be asked"
        )
    secrets.append(password)
    return Cluster(**place, user=user, password=password)


# ---------------------------------------------------------------------------
# serve
