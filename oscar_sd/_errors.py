"""The errors the library raises.

Every message is a sentence a person can act on, and none of them ever holds a
password, a token or a storage key.
"""

from __future__ import annotations

import json


class OscarSDError(Exception):
    """Base class of every error raised by oscar_sd."""


class InvalidRequestError(OscarSDError, ValueError):
    """A generation request has a field out of range; the message names it."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


class AuthenticationError(OscarSDError):
    """The cluster refused the credentials (HTTP 401) or the session expired."""

    def __init__(self, message: str, status: int | None = None) -> None:
        #: The cluster's HTTP status (401, 403), None when no answer of it is behind this.
        self.status = status
        super().__init__(message)


class SignInExpired(AuthenticationError):
    """The OIDC provider refused to renew the sign-in: the person must sign in again."""

    def __init__(self, message: str = "Your sign-in has expired, sign in again.") -> None:
        super().__init__(message)


class ClusterUnreachableError(OscarSDError):
    """The OSCAR endpoint or its MinIO could not be reached."""


class ClusterRequestError(OscarSDError):
    """The cluster answered a request with an error status (other than 401/403)."""

    def __init__(self, message: str, status: int) -> None:
        self.status = status
        super().__init__(message)


class ServiceNotFoundError(OscarSDError):
    """The named OSCAR service does not exist on the cluster."""

    def __init__(self, service: str, available: list[str]) -> None:
        self.service = service
        self.available = available
        existing = ", ".join(sorted(available)) if available else "none"
        super().__init__(
            f"The cluster has no service named {service!r} (services there: {existing}). "
            "Deploy it with `oscar-sd deploy` or pick one of those."
        )


class ServiceMisconfiguredError(OscarSDError):
    """The service exists but lacks the MinIO input or output path the app needs."""


class ServiceNotAvailableError(ServiceMisconfiguredError):
    """The service is there, but not open to this person's account (no storage policy,
    private to someone else): only the cluster's operator can change that, so the
    message says only that; the detail goes to the log and to ``oscar-sd doctor``."""

    def __init__(self, service: str) -> None:
        self.service = service
        super().__init__(
            f"Service {service!r} is not available to your account. Ask the cluster's "
            "operator to share it with you."
        )


class JobFailedError(OscarSDError):
    """The service ran and reported a failure for this job."""

    def __init__(self, message: str, job_id: str, error_type: str | None = None) -> None:
        self.job_id = job_id
        self.error_type = error_type
        super().__init__(message)

    @classmethod
    def from_report(cls, data: bytes, job_id: str) -> JobFailedError:
        """The failure ``<job>.error.json`` reports (``{"error": ..., "type": ...}``)."""
        try:
            report = json.loads(data[:1_000_000])
            message = str(report.get("error") or "no reason given")[:2000]
            error_type = report.get("type")
        except (ValueError, AttributeError):
            message, error_type = "its error report could not be read", None
        return cls(f"The service failed: {message}", job_id, error_type)


class GenerationTimeout(OscarSDError, TimeoutError):
    """No result arrived before the request's deadline."""


class InvalidResultError(OscarSDError):
    """The result object is not a safe archive of images."""
