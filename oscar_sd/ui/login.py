"""Logging in: each login opens a new session under a random key.

On a cluster the check is the cluster itself: the credentials open a backend
of this login's own (DESIGN.md mistake 1 was one global client). With a user
name and password that is OSCAR's one basic-auth account, so the name says
nothing about who is at the keyboard: sessions are never keyed by it. With an
OIDC sign-in the access token opens it, and renews itself.

A password is handed to the backend once and dropped there
(``keep_password=False``): it is never logged, kept by the app, or put in a
page. What later needs the cluster's API asks the person to log in again; the
images need only the storage keys OSCAR issued at login.

Locally, ``OSCAR_SD_USERS`` names the accounts, and all sessions share the one
local backend.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Awaitable, Callable

import anyio

from .._backend import Backend
from .._choice import ModelChoice, named_by_model
from .._errors import (
    AuthenticationError,
    ClusterUnreachableError,
    OscarSDError,
    ServiceMisconfiguredError,
    ServiceNotFoundError,
)
from .._oscar import OscarSD
from .._settings import Settings
from .._spill import SpillOver
from .._spill_connect import connect_backend
from ..history import DiskObjects, History
from .oidc import SignedIn
from .sessions import Sessions, UserSession, new_session_key

log = logging.getLogger("oscar_sd.ui")

WRONG_PASSWORD = "Incorrect user name or password."


class LoginRefused(Exception):
    """The login failed; the message is for the person, ``status`` for the HTTP answer."""

    def __init__(self, message: str, status: int = 401, cluster_status: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        #: What the cluster answered, when it refused (401, 403).
        self.cluster_status = cluster_status


class ClusterLogin:
    """Logs people in against the cluster: each login opens its own backend."""

    def __init__(self, sessions: Sessions, settings: Settings) -> None:
        self._sessions = sessions
        self._settings = settings
        #: The groups the cluster admits, as admitted logins' /system/config showed them.
        self._seen_groups: tuple[str, ...] = ()

    async def with_password(self, user: str, password: str) -> UserSession:
        if not user or not password:
            raise LoginRefused(WRONG_PASSWORD)
        return await self._open(user, {"user": user, "password": password})

    async def with_oidc(self, signed_in: SignedIn) -> UserSession:
        try:
            return await self._open(signed_in.name, {"token": signed_in.token})
        except LoginRefused as refused:
            if refused.cluster_status != 401:
                raise
            # The provider just accepted this sign-in, so OSCAR's 401 is not an expired
            # token: it admits only members of its OIDC_GROUPS (pkg/utils/auth/oidc.go).
            admitted = self.admitted_groups()
            log.info("OIDC sign-in refused by the cluster (HTTP 401); the sign-in carries "
                     "groups %s, the cluster admits %s", list(signed_in.groups),
                     list(admitted) or "groups this app has not seen")
            raise LoginRefused(groups_refused(signed_in.groups, admitted)) from None

    def admitted_groups(self) -> tuple[str, ...]:
        """OSCAR_SD_OIDC_GROUPS, else the ``oidc_groups`` admitted logins were shown."""
        configured = tuple(g.strip() for g in self._settings.oidc_groups.split(",") if g.strip())
        return configured or self._seen_groups

    async def _open(self, account: str, credentials: dict[str, object]) -> UserSession:
        settings, folder = self._settings, self._sessions.new_folder()
        token = credentials.get("token")

        async def connect_to(service: str) -> Backend:
            # A warm service that names a per-job partner connects as a spill-over pair;
            # connecting is a sign-in, which starts a stopped warm service (_spill.py).
            return await connect_backend(
                settings.oscar_endpoint,
                **credentials,  # type: ignore[arg-type]
                keep_password=False,
                service=service,
                spill_after=settings.spill_after,
                verify_ssl=settings.verify_ssl,
                timeout=settings.timeout,
                quota_timeout=settings.quota_timeout,
                outage_timeout=settings.outage_timeout,
                results_dir=folder,
            )

        async def connect() -> Backend:
            if len(settings.services) == 1:
                return await connect_to(settings.services[0])
            return await connect_choice(settings.services, connect_to)

        key = new_session_key()
        try:
            backend = await connect()
        except AuthenticationError as exc:
            log.info("login refused by the cluster")
            raise LoginRefused(
                str(exc) if token is not None else WRONG_PASSWORD, cluster_status=exc.status
            ) from None
        except ClusterUnreachableError as exc:
            # Said as it is: "incorrect credentials" would send people hunting a typo.
            log.warning("login impossible, the cluster is unreachable: %s", exc)
            raise LoginRefused(
                "The cluster cannot be reached right now, so your login could not be "
                "checked. Try again in a moment.",
                status=503,
            ) from None
        except (ServiceNotFoundError, ServiceMisconfiguredError) as exc:
            # The credentials were good (they are checked first); the service is not
            # usable yet. Let the person in: the page says what is wrong. A token
            # may try again on the next click; a password is not kept for that.
            log.warning("login accepted, but the service is not usable: %s", exc)
            reconnect = connect if token is not None else None
            credentials.pop("password", None)
            return await self._sessions.open(
                key, None, owns_backend=True, account=account, reconnect=reconnect,
                backend_error=exc, directory=folder, token=token,  # type: ignore[arg-type]
            )
        except OscarSDError as exc:
            log.warning("login refused: %s", exc)
            raise LoginRefused(str(exc), status=502) from None
        self._seen_groups = tuple(getattr(backend, "oidc_groups", ())) or self._seen_groups
        # The password goes with this frame; only a token (renewing itself) is kept.
        reconnect = connect if token is not None else None
        credentials.pop("password", None)
        store = await self._history_of(backend)
        session = await self._sessions.open(
            key, backend, owns_backend=True, account=account, reconnect=reconnect,
            directory=folder, token=token, store=store,  # type: ignore[arg-type]
        )
        log.info("login: session open; %d open", len(self._sessions))
        return session

    async def _history_of(self, backend: OscarSD | SpillOver | ModelChoice) -> History | None:
        """The identity's history on the cluster; without it the page still works."""
        try:
            return await backend.history(self._settings.history_budget())
        except OscarSDError as exc:
            log.warning("no history for this login: %s", exc)
            return None


async def connect_choice(
    services: list[str], connect_to: Callable[[str], Awaitable[Backend]]
) -> ModelChoice:
    """A client for each of ``services`` this person may use, named by model.

    A service they cannot use (missing, not theirs to see, misconfigured) is left
    out and logged; with none left, the first one's error is raised. Refused
    credentials are raised at once (they are the same for every service).
    """
    clients: dict[str, Backend] = {}
    errors: dict[str, OscarSDError] = {}

    async def one(service: str) -> None:
        try:
            clients[service] = await connect_to(service)
        except (ServiceNotFoundError, ServiceMisconfiguredError) as exc:
            log.info("service %r is not offered to this login: %s", service, exc)
            errors[service] = exc

    async with anyio.create_task_group() as tasks:
        for service in services:
            tasks.start_soon(one, service)
    if not clients:
        raise errors[services[0]]
    # A spill-over pair is named by its warm half's model (it runs the same one).
    ordered = [(getattr(clients[s], "model", None) or s, s, clients[s])
               for s in services if s in clients]
    return ModelChoice(named_by_model(ordered))


def groups_refused(yours: tuple[str, ...], admitted: tuple[str, ...]) -> str:
    """What to tell a person whom the cluster refuses for their groups."""
    if admitted:
        which = ", ".join(admitted)
        plural = "s" if len(admitted) > 1 else ""
        lets_in = f"admits only members of the group{plural} {which}"
    else:
        lets_in = ("admits only members of the groups its operator chose (it shows them "
                   "only to people it admits)")
    if yours:
        carries = f"your sign-in shows you in {', '.join(yours)}"
    else:
        carries = ("your sign-in shows you in no group at all (the sign-in service released "
                   "no entitlements)")
    return (f"Signed in, but the cluster does not admit your account: it {lets_in}, and "
            f"{carries}. Ask the cluster's operator to add you to one of its groups.")


def local_history(settings: Settings, account: str | None) -> History:
    """A local history: the machine's without a login, else the account's own folder."""
    folder = settings.data_folder()
    if account is not None:
        folder = folder / "accounts" / hashlib.sha256(account.encode()).hexdigest()[:20]
    else:
        folder = folder / "history"
    return History(DiskObjects(folder), settings.history_budget())


class LocalLogin:
    """Logs users in against ``OSCAR_SD_USERS``; every session shares the local backend."""

    def __init__(
        self, sessions: Sessions, accounts: dict[str, str], backend: Callable[[], Backend],
        settings: Settings | None = None,
    ) -> None:
        self._sessions = sessions
        self._accounts = accounts
        self._backend = backend
        self._settings = settings or Settings()

    async def with_password(self, user: str, password: str) -> UserSession:
        expected = self._accounts.get(user)
        # Compared in constant time; an unknown user costs the same as a wrong password.
        given, wanted = password.encode(), (expected or "\0").encode()
        if not hmac.compare_digest(given, wanted) or expected is None:
            log.info("local login refused")
            raise LoginRefused(WRONG_PASSWORD)
        return await self._sessions.open(
            new_session_key(), self._backend(), owns_backend=False, account=user,
            store=local_history(self._settings, user),
        )
