"""Configuration from the environment, for the web app and the command line.

The names ``oscar_endpoint`` and ``port`` are the ones the original front end
used, so existing deployments keep working; everything else is ``OSCAR_SD_*``.
"""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every setting the app and the CLI read, with its environment variable."""

    model_config = SettingsConfigDict(env_prefix="OSCAR_SD_", extra="ignore")

    #: OSCAR cluster URL; empty means the embedded local backend.
    oscar_endpoint: str = Field("", validation_alias="oscar_endpoint")
    #: Port of the web app.
    port: int = Field(7000, validation_alias="port")
    #: Address the web app binds to.
    host: str = "0.0.0.0"
    #: Name of the Stable Diffusion service on the cluster.
    service: str = "stable-diffusion"
    #: Path prefix when served behind an Ingress subpath, e.g. "/sd".
    root_path: str = ""
    #: Seconds a request may take before it fails with a timeout.
    timeout: float = 900.0
    #: How many generate requests the page runs at once.
    concurrency: int = 32
    #: Verify the cluster's TLS certificate.
    verify_ssl: bool = True
    #: Local backend model: "auto", "tiny", a hub id or a folder.
    model: str = "auto"
    #: Local mode only: "user:password,user2:password2" turns the login on.
    users: SecretStr = SecretStr("")
    #: Where per-request result folders are created (default: the system temp dir).
    results_dir: str = ""

    @property
    def local(self) -> bool:
        """True when no cluster is configured and the app generates in-process."""
        return not self.oscar_endpoint

    def local_accounts(self) -> dict[str, str]:
        """The accounts of ``OSCAR_SD_USERS`` as {user: password}."""
        accounts: dict[str, str] = {}
        for entry in self.users.get_secret_value().split(","):
            user, sep, password = entry.strip().partition(":")
            if user and sep:
                accounts[user] = password
        return accounts
