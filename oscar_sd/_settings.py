"""Configuration from the environment, for the web app and the command line.

The names ``oscar_endpoint`` and ``port`` are the ones the original front end
used, so existing deployments keep working; everything else is ``OSCAR_SD_*``.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .history import MB, HistoryBudget, default_data_dir


class Settings(BaseSettings):
    """Every setting the app and the CLI read, with its environment variable."""

    model_config = SettingsConfigDict(env_prefix="OSCAR_SD_", extra="ignore")

    #: OSCAR cluster URL; empty means the embedded local backend.
    oscar_endpoint: str = Field("", validation_alias="oscar_endpoint")
    #: Port of the web app.
    port: int = Field(7000, validation_alias="port")
    #: Address the web app binds to.
    host: str = "0.0.0.0"
    #: Name of the Stable Diffusion service on the cluster; several, comma-separated, make
    #: a model choice on the page (each named by its model).
    service: str = "stable-diffusion"
    #: Path prefix when served behind an Ingress subpath, e.g. "/sd". As an OSCAR
    #: exposed service (manifests/app.yaml) OSCAR sets OSCAR_SERVICE_BASE_PATH
    #: (/system/services/<name>/exposed, or "/" with DNS routing): the fallback.
    root_path: str = Field(
        "", validation_alias=AliasChoices("OSCAR_SD_ROOT_PATH", "OSCAR_SERVICE_BASE_PATH",
                                          "root_path"),
    )
    #: Seconds a request may take before it fails with a timeout.
    timeout: float = 900.0
    #: Seconds a request may see only jobs the cluster's quota holds Suspended before it
    #: fails with an error naming the quota (OSCAR's Kueue may never admit them).
    quota_timeout: float = Field(600.0, gt=0)
    #: Seconds a request rides out the cluster's storage not answering (MinIO restarts
    #: whenever anyone deploys a service) before it fails saying so.
    outage_timeout: float = Field(60.0, gt=0)
    #: Spill-over (a warm service naming a per-job partner): a request whose start on
    #: the warm replicas is further off than this many seconds runs as a per-job job.
    spill_after: float = Field(default=10.0, ge=0)
    #: Warm on demand: seconds without anyone before the warm service is stopped.
    warm_idle_stop: float = Field(default=900.0, gt=0)
    #: How many generate requests the page runs at once.
    concurrency: int = 32
    #: Verify the cluster's TLS certificate.
    verify_ssl: bool = True
    #: Local backend model: "auto", "tiny", a hub id or a folder.
    model: str = "auto"
    #: Local mode: a folder of diffusers pipelines (one sub-folder each) offered as models,
    #: beside the configured one, those in the Hugging Face cache, and tiny.
    models_dir: str = ""

    @property
    def services(self) -> list[str]:
        """The service names of ``service`` (a comma-separated list), in order."""
        names = [name.strip() for name in self.service.split(",") if name.strip()]
        return names or ["stable-diffusion"]
    #: OIDC sign-in ("Sign in with EGI Check-in"): the issuer, and this app's client.
    oidc_issuer: str = "https://aai.egi.eu/auth/realms/egi"
    #: Empty: no OIDC sign-in on the page (the user name and password form only).
    oidc_client_id: str = ""
    oidc_client_secret: SecretStr = SecretStr("")
    #: offline_access for a refresh token; entitlements for OSCAR's group check (EGI
    #: Check-in releases the ``entitlements`` claim, which OSCAR reads, for that scope).
    oidc_scopes: str = "openid profile email offline_access entitlements"
    #: The groups the cluster admits (OSCAR's OIDC_GROUPS, comma-separated), to tell a
    #: person it refuses which groups would let them in: OSCAR shows its ``oidc_groups``
    #: only to an admitted user. Empty: the groups admitted users' sign-ins have shown.
    oidc_groups: str = ""
    #: The token endpoint for renewing OSCAR_SD_REFRESH_TOKEN (CLI); default: the issuer's.
    token_endpoint: str = ""
    #: Offer the user name and password form (OSCAR's basic-auth account).
    password_login: bool = True
    #: Local mode only: "user:password,user2:password2" turns the login on.
    users: SecretStr = SecretStr("")
    #: Where per-request result folders are created (default: the system temp dir).
    results_dir: str = ""
    #: Web app: MB of images kept on disk in all (the oldest runs go first beyond it).
    results_budget_mb: int = Field(512, gt=0)
    #: Web app: MB of images kept per login (its own oldest runs go first beyond it).
    session_budget_mb: int = Field(100, gt=0)
    #: Web app: runs kept per login in the app's disk cache (its own oldest go first).
    session_runs: int = Field(24, gt=0)
    #: Web app: runs kept in each identity's history (its oldest go first beyond it).
    history_runs: int = Field(100, gt=0)
    #: Web app: MB of images kept in each identity's history (its oldest go first).
    history_mb: int = Field(500, gt=0)
    #: Local mode: where the history is kept (default: the user's data directory,
    #: ``~/.local/share/oscar-sd`` on Linux).
    data_dir: str = ""
    #: Web app: days a share link works (at most 7 on a cluster: presigned URLs).
    share_days: float = Field(7.0, gt=0)
    #: Web app: seconds a SIGTERM waits for the runs in flight (inside the pod's
    #: terminationGracePeriodSeconds, 30 by default).
    drain_seconds: float = Field(25.0, ge=0)
    #: Web app: seconds a run whose app process stopped must have waited (its result
    #: landed with nobody taking it) before another process takes it into the history.
    adopt_after: float = Field(30.0, ge=0)
    #: Web app: seals share links and sign-in cookies (the same on every replica).
    #: Empty: locally a key kept in the data folder; on a cluster one per process.
    secret_key: SecretStr = SecretStr("")

    @field_validator("root_path")
    @classmethod
    def _no_trailing_slash(cls, value: str) -> str:
        """``/`` (OSCAR's DNS routing) is no prefix at all; ``/sd/`` is ``/sd``."""
        return value.rstrip("/")

    @property
    def local(self) -> bool:
        """True when no cluster is configured and the app generates in-process."""
        return not self.oscar_endpoint

    @property
    def oidc_enabled(self) -> bool:
        """True when the page offers OIDC sign-in (a client id is configured)."""
        return bool(self.oidc_client_id)

    def default_token_endpoint(self) -> str:
        """``token_endpoint``, or the issuer's as Keycloak (EGI Check-in) spells it."""
        return self.token_endpoint or (
            self.oidc_issuer.rstrip("/") + "/protocol/openid-connect/token"
        )

    def history_budget(self) -> HistoryBudget:
        """The per-identity history budget (``history_runs``, ``history_mb``)."""
        return HistoryBudget(max_runs=self.history_runs, max_bytes=self.history_mb * MB)

    def data_folder(self) -> Path:
        """``data_dir``, or the platform's per-user data folder."""
        return Path(self.data_dir).expanduser() if self.data_dir else default_data_dir()

    def local_accounts(self) -> dict[str, str]:
        """The accounts of ``OSCAR_SD_USERS`` as {user: password}."""
        accounts: dict[str, str] = {}
        for entry in self.users.get_secret_value().split(","):
            user, sep, password = entry.strip().partition(":")
            if user and sep:
                accounts[user] = password
        return accounts
