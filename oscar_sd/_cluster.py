"""OSCAR's REST API, through oscar-python, in worker threads and with our errors.

Both the OSCAR backend (connect, jobs) and deploying (services) talk to the
cluster through :class:`OscarCluster`, so every failure reads the same way:
a sentence a person can act on, and never a credential.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit, urlunsplit

import anyio
import anyio.to_thread
import requests
from oscar_python import _utils as oscar_requests
from oscar_python.client import Client

from ._errors import (
    AuthenticationError,
    ClusterRequestError,
    ClusterUnreachableError,
    OscarSDError,
    ServiceNotFoundError,
)
from ._tokens import OidcToken

T = TypeVar("T")


class OscarCluster:
    """An oscar-python client whose calls run in a thread and raise oscar_sd errors.

    ``limit`` bounds every call, so an endpoint that accepts connections but
    never answers fails in seconds rather than after oscar-python's minute.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        user: str | None = None,
        password: str | None = None,
        token: str | OidcToken | None = None,
        verify_ssl: bool = True,
        limit: float = 60.0,
    ) -> None:
        self.endpoint = public_endpoint(endpoint)
        self.limit = limit
        # A bearer token that renews itself; oscar-python gets its current value per call.
        self.token = OidcToken(token) if isinstance(token, str) else token
        self._password_forgotten = False
        #: The groups OSCAR admits OIDC users of (``oidc_groups``), once config() read them.
        self.oidc_groups: tuple[str, ...] = ()
        options: dict[str, Any] = {
            "cluster_id": "oscar-sd",
            "endpoint": self.endpoint,
            "ssl": verify_ssl,
        }
        if self.token is not None:
            # Only the access token: oscar-python would renew a refresh token with
            # EGI's defaults, not with this token's endpoint and client.
            options["oidc_token"] = ""  # set before each call
        elif user and password is not None:
            options["user"] = user
            options["password"] = password
        else:
            raise AuthenticationError(
                "No credentials: give a user name and password, or a bearer token."
            )
        self.client = Client(options)

    def forget_password(self) -> None:
        """Drop the basic-auth password: later calls ask the person to log in again."""
        if hasattr(self.client, "password"):
            self.client.password = None
            self._password_forgotten = True

    @property
    def can_call(self) -> bool:
        """False once the password was dropped: every call would ask to log in again."""
        return not self._password_forgotten

    async def call(
        self, method: Callable[..., T], *args: Any, what: str, missing_ok: bool = False
    ) -> T | None:
        """Run ``method(*args)`` of the client in a thread; ``what`` names it in errors.

        With ``missing_ok`` an HTTP 404 answer gives None instead of an error.
        """
        if self._password_forgotten:
            raise AuthenticationError(
                "The password is not kept after login. Log in again to do this."
            )
        if self.token is not None:
            self.client.oidc_token = await self.token.fresh()
        try:
            with anyio.fail_after(self.limit):
                return await anyio.to_thread.run_sync(
                    functools.partial(method, *args), abandon_on_cancel=True
                )
        except TimeoutError:
            raise ClusterUnreachableError(
                f"The OSCAR cluster at {self.endpoint} did not answer within {self.limit:g} s "
                f"(trying to {what}). Check the URL and that the cluster is up."
            ) from None
        except requests.exceptions.SSLError:
            raise ClusterUnreachableError(
                f"The TLS certificate of {self.endpoint} could not be verified while trying to "
                f"{what}. Fix the certificate, or turn verification off (--insecure, "
                "OSCAR_SD_VERIFY_SSL=false) on a cluster you trust."
            ) from None
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
            reason = "timed out" if isinstance(exc, requests.exceptions.Timeout) else "no answer"
            raise ClusterUnreachableError(
                f"Cannot reach the OSCAR cluster at {self.endpoint} to {what} ({reason}). "
                "Check the URL and that the cluster is up."
            ) from None
        except requests.exceptions.HTTPError as exc:
            if missing_ok and exc.response is not None and exc.response.status_code == 404:
                return None
            raise self._http_error(exc, what) from None
        except requests.exceptions.RequestException as exc:
            raise ClusterUnreachableError(
                f"The request to the OSCAR cluster at {self.endpoint} to {what} failed "
                f"({type(exc).__name__}). Check the URL."
            ) from None

    def _http_error(self, exc: requests.exceptions.HTTPError, what: str) -> OscarSDError:
        status = exc.response.status_code if exc.response is not None else 0
        if status == 401 and self.token is not None:
            # OSCAR answers 401 both to a token it cannot verify and to the valid token of
            # someone in none of its OIDC_GROUPS (pkg/utils/auth/oidc.go IsAuthorised).
            return AuthenticationError(
                f"The OSCAR cluster at {self.endpoint} refused the credentials (HTTP 401): "
                "the token expired or is not valid there, or the cluster admits only members "
                "of its OIDC groups and this account is in none of them. Sign in again, or "
                "ask the cluster's operator which groups it admits.", 401
            )
        if status == 401:
            return AuthenticationError(
                f"The OSCAR cluster at {self.endpoint} refused the credentials (HTTP 401). "
                "Check the user name and password, or the token, or log in again.", 401
            )
        if status == 403:
            return AuthenticationError(
                f"The OSCAR cluster at {self.endpoint} does not allow this account to {what} "
                "(HTTP 403).", 403
            )
        # OSCAR explains a refusal in the body as plain text; a short piece of it helps.
        detail = ""
        if exc.response is not None and exc.response.text:
            detail = ": " + " ".join(exc.response.text.split())[:300]
        return ClusterRequestError(
            f"The cluster at {self.endpoint} could not {what} (HTTP {status}){detail}", status
        )

    async def config(self) -> dict[str, Any]:
        """``GET /system/config``: with the MinIO keys, which stay on this side of the app."""
        response = await self.call(
            self.client.get_cluster_config, what="read the cluster configuration"
        )
        config = (response.json() if response is not None else None) or {}
        # ConfigForUser: {config: {...}, minio_provider} (grycap/oscar pkg/types/config.go).
        inner = config.get("config") if isinstance(config.get("config"), dict) else config
        groups = inner.get("oidc_groups") or config.get("oidc_groups")
        if isinstance(groups, list):
            self.oidc_groups = tuple(str(group) for group in groups if group)
        return config

    async def info(self) -> dict[str, Any]:
        """``GET /system/info``: the cluster's ``version`` (``"v4.1.2"``) among others."""
        response = await self.call(self.client.get_cluster_info, what="read the cluster's version")
        return (response.json() if response is not None else None) or {}

    async def status(self) -> dict[str, Any] | None:
        """``GET /system/status``: nodes, free resources, GPUs; None where it is missing."""
        response = await self.call(self.client.get_cluster_status,
                                   what="read the cluster's status", missing_ok=True)
        return None if response is None else response.json()

    async def own_quota(self) -> dict[str, Any] | None:
        """``GET /system/quotas/user`` (OSCAR v4, bearer users): this user's Kueue
        quota; None where the cluster has no quotas API. oscar-python has no call
        for it, so its own request helper (auth headers, TLS setting) makes it."""
        response = await self.call(
            oscar_requests.make_request, self.client, "/system/quotas/user", "get",
            what="read this account's quota", missing_ok=True)
        return None if response is None else response.json()

    async def user_quota(self, user_id: str) -> dict[str, Any] | None:
        """``GET /system/quotas/user/<user_id>`` (OSCAR v4, the admin only)."""
        response = await self.call(
            oscar_requests.make_request, self.client, f"/system/quotas/user/{quote(user_id)}",
            "get", what=f"read the quota of {user_id!r}", missing_ok=True)
        return None if response is None else response.json()

    async def service(self, name: str) -> dict[str, Any] | None:
        """The service's definition, or None when the cluster has no such service."""
        response = await self.call(
            self.client.get_service, name, what=f"read service {name!r}", missing_ok=True
        )
        return None if response is None else response.json()

    async def require_service(self, name: str) -> dict[str, Any]:
        """The service's definition; :class:`ServiceNotFoundError` names the ones that exist."""
        definition = await self.service(name)
        if definition is None:
            available = [str(svc.get("name")) for svc in await self.services()]
            raise ServiceNotFoundError(name, available)
        return definition

    async def services(self) -> list[dict[str, Any]]:
        response = await self.call(self.client.list_services, what="list the services")
        return (response.json() if response is not None else None) or []

    async def create(self, definition: dict[str, Any]) -> None:
        await self.call(
            self.client.create_service, definition, what=f"create service {definition['name']!r}"
        )

    async def update(self, definition: dict[str, Any]) -> None:
        name = definition["name"]
        await self.call(
            self.client.update_service, name, definition, what=f"update service {name!r}"
        )

    async def jobs(self, name: str) -> dict[str, Any]:
        """Every job of service ``name`` by job name (a JobInfo each: ``status``, times),
        read page by page from ``GET /system/logs/{name}``.

        OSCAR answers 70 jobs a page (its ``JOB_LISTING_LIMIT``) with a ``next_page``
        token while more remain, which goes back as ``?page=`` (grycap/oscar
        ``pkg/handlers/logs.go``, ``pkg/types/jobinfo.go``). Releases before 3.6
        answer the ``{name: info}`` map itself, all at once. Both are read. Under
        OIDC a user is shown only their own jobs.
        """
        jobs: dict[str, Any] = {}
        page, seen = "", set()
        for _ in range(MAX_JOB_PAGES):
            response = await self.call(
                self.client.list_jobs, name, quote(page, safe=""),
                what=f"list the jobs of {name!r}", missing_ok=True,
            )
            answer = (response.json() if response is not None else None) or {}
            paged = isinstance(answer.get("jobs"), dict)
            jobs.update(answer["jobs"] if paged else answer)
            page = str(answer.get("next_page") or "") if paged else ""
            if not page or page in seen:
                break
            seen.add(page)
        return jobs

    async def job_log(self, name: str, job: str) -> str | None:
        """``GET /system/logs/{name}/{job}``: the job's log (its container's output),
        or None when the cluster no longer has it."""
        response = await self.call(
            self.client.get_job_logs, name, job,
            what=f"read the log of job {job!r}", missing_ok=True,
        )
        return None if response is None else response.text


    # -- an exposed service's replicas (OSCAR v4) -------------------------------------

    async def deployment(self, name: str) -> dict[str, Any] | None:
        """``GET /system/services/{name}/deployment`` (since v4.0.0): the exposed
        service's ``state`` (ready, degraded, pending, stopped, failed) and
        ``active_instances``; None where the cluster has no such route or service."""
        response = await self.call(
            self.client.get_deployment_status, name,
            what=f"read the replicas of {name!r}", missing_ok=True,
        )
        return None if response is None else response.json()

    async def lifecycle(self, name: str, action: str) -> dict[str, Any]:
        """``POST /system/services/{name}/stop|start|restart`` (since v4.1.0,
        grycap/oscar ``pkg/handlers/lifecycle.go``): the Deployment's status after.
        oscar-python has no call for it; its own request helper sends the auth."""
        response = await self.call(
            oscar_requests.make_request, self.client, f"/system/services/{name}/{action}",
            "post", what=f"{action} service {name!r}",
        )
        try:
            return (response.json() if response is not None else None) or {}
        except ValueError:
            return {}


#: A bound on the pages read, should a cluster keep answering with new tokens.
MAX_JOB_PAGES = 1000


def public_endpoint(endpoint: str) -> str:
    """The endpoint without any ``user:password@`` part, which must never be shown."""
    parts = urlsplit(endpoint.strip().rstrip("/"))
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ClusterUnreachableError(
            "The cluster URL is not valid: it should look like https://oscar.example.org"
        )
    netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
