"""Tokens only this app can read or make: encrypted and signed, with an expiry inside.

Share links (``share.py``) and sign-ins that outlive the app process
(``signin.py``) carry their state in such a token. Fernet (the
``cryptography`` package: AES-128-CBC with an HMAC-SHA256 over it) keeps the
content secret and refuses any token altered or made with another key.

The key comes from ``OSCAR_SD_SECRET_KEY`` (any long random string; the same
on every replica, from a Kubernetes Secret). Without it, local mode keeps a
generated key in its data folder (``secret.key``, readable by the user only),
so links survive restarts; on a cluster a key is made per process, and the
log says that links and sign-ins then end with the process.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import secrets
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

log = logging.getLogger("oscar_sd.ui")


class TokenInvalid(Exception):
    """Not a token of this app (altered, truncated, or sealed with another key)."""


class TokenExpired(Exception):
    """A token of this app whose time is over."""

    def __init__(self, expired_at: float) -> None:
        super().__init__(expired_at)
        self.expired_at = expired_at


def _fernet_key(secret: str) -> bytes:
    return base64.urlsafe_b64encode(hashlib.sha256(secret.encode()).digest())


class Sealer:
    """Seals a JSON-able dict into a URL-safe token, and opens it again."""

    def __init__(self, secret: str, clock: Callable[[], float] = time.time) -> None:
        if len(secret) < 16:
            raise ValueError("OSCAR_SD_SECRET_KEY must be at least 16 characters long")
        self._fernet = Fernet(_fernet_key(secret))
        self._clock = clock

    def seal(self, payload: dict[str, Any], lifetime: float) -> str:
        body = {"exp": self._clock() + lifetime, "p": payload}
        data = zlib.compress(json.dumps(body, separators=(",", ":")).encode())
        return self._fernet.encrypt(data).decode().rstrip("=")

    def open(self, token: str) -> dict[str, Any]:
        """The payload; :class:`TokenInvalid` or :class:`TokenExpired`."""
        padded = token + "=" * (-len(token) % 4)
        try:
            body = json.loads(zlib.decompress(self._fernet.decrypt(padded.encode())))
        except (InvalidToken, ValueError, zlib.error):
            raise TokenInvalid() from None
        if not isinstance(body, dict) or not isinstance(body.get("p"), dict):
            raise TokenInvalid()
        expires = float(body.get("exp") or 0)
        if expires < self._clock():
            raise TokenExpired(expires)
        return body["p"]


def app_secret(configured: str, *, local: bool, data_folder: Path) -> str:
    """The secret to seal with: the setting, else (locally) one kept in the data folder,
    else a new one for this process only."""
    if configured:
        return configured
    if local:
        path = data_folder / "secret.key"
        try:
            return path.read_text().strip()
        except FileNotFoundError:
            data_folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            secret = secrets.token_urlsafe(32)
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as file:
                file.write(secret)
            return secret
    log.warning(
        "OSCAR_SD_SECRET_KEY is not set: share links and sign-ins end when this process "
        "does, and other replicas cannot read them. Set it (the same on every replica)."
    )
    return secrets.token_urlsafe(32)
