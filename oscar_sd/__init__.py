"""oscar_sd: text-to-image on an OSCAR cluster, from Python, a web page or a shell.

>>> import oscar_sd
>>> async def main():
...     async with oscar_sd.OscarSD.connect(
...         "https://oscar.example.org", user="alice", password="...",
...     ) as sd:
...         result = await sd.generate(oscar_sd.GenerationRequest(prompt="a red fox"))
...         print(result.images)

The names below are imported on first use (PEP 562 ``__getattr__``): the OSCAR
job imports ``oscar_sd.service`` and its request model without paying for
oscar-python, minio and aiohttp, which it never uses (~0.4 s of its cold start).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._backend import Backend
    from ._choice import ModelChoice
    from ._deploy import (
        DeployedService,
        DeployError,
        DeployRefused,
        FDLError,
        JobState,
        ServiceStatus,
        deploy_service,
        service_status,
    )
    from ._doctor import Check, DoctorReport, doctor
    from ._errors import (
        AuthenticationError,
        ClusterRequestError,
        ClusterUnreachableError,
        GenerationTimeout,
        InvalidRequestError,
        InvalidResultError,
        JobFailedError,
        OscarSDError,
        ServiceMisconfiguredError,
        ServiceNotAvailableError,
        ServiceNotFoundError,
        SignInExpired,
    )
    from ._local import LocalSD
    from ._models import (
        GenerationRequest,
        GenerationResult,
        Progress,
        ProgressCallback,
        Stage,
        Timings,
    )
    from ._notify.backoff import Backoff
    from ._oscar import OscarSD
    from ._settings import Settings
    from ._spill import SpillOver
    from ._spill_connect import connect_backend, connect_pair
    from ._tokens import OidcToken
    from ._warm_control import WarmControl, WarmState

#: Public name -> the private module that defines it.
_HOMES = {
    "Backend": "._backend",
    "DeployedService": "._deploy",
    "DeployError": "._deploy",
    "DeployRefused": "._deploy",
    "FDLError": "._deploy",
    "JobState": "._deploy",
    "ServiceStatus": "._deploy",
    "deploy_service": "._deploy",
    "service_status": "._deploy",
    "Check": "._doctor",
    "DoctorReport": "._doctor",
    "doctor": "._doctor",
    "AuthenticationError": "._errors",
    "ClusterRequestError": "._errors",
    "ClusterUnreachableError": "._errors",
    "GenerationTimeout": "._errors",
    "InvalidRequestError": "._errors",
    "InvalidResultError": "._errors",
    "JobFailedError": "._errors",
    "OscarSDError": "._errors",
    "ServiceMisconfiguredError": "._errors",
    "ServiceNotAvailableError": "._errors",
    "ServiceNotFoundError": "._errors",
    "SignInExpired": "._errors",
    "Backoff": "._notify.backoff",
    "LocalSD": "._local",
    "ModelChoice": "._choice",
    "GenerationRequest": "._models",
    "GenerationResult": "._models",
    "Progress": "._models",
    "ProgressCallback": "._models",
    "Stage": "._models",
    "Timings": "._models",
    "OscarSD": "._oscar",
    "Settings": "._settings",
    "OidcToken": "._tokens",
    "SpillOver": "._spill",
    "connect_backend": "._spill_connect",
    "connect_pair": "._spill_connect",
    "WarmControl": "._warm_control",
    "WarmState": "._warm_control",
}

__all__ = [
    "AuthenticationError",
    "Backend",
    "Backoff",
    "Check",
    "ClusterRequestError",
    "ClusterUnreachableError",
    "DeployError",
    "DeployRefused",
    "DeployedService",
    "DoctorReport",
    "FDLError",
    "GenerationRequest",
    "GenerationResult",
    "GenerationTimeout",
    "InvalidRequestError",
    "InvalidResultError",
    "JobFailedError",
    "JobState",
    "LocalSD",
    "ModelChoice",
    "OidcToken",
    "OscarSD",
    "OscarSDError",
    "Progress",
    "ProgressCallback",
    "ServiceMisconfiguredError",
    "ServiceNotAvailableError",
    "ServiceNotFoundError",
    "ServiceStatus",
    "Settings",
    "SignInExpired",
    "SpillOver",
    "Stage",
    "Timings",
    "WarmControl",
    "WarmState",
    "connect_backend",
    "connect_pair",
    "deploy_service",
    "doctor",
    "service_status",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home, __name__), name)
    globals()[name] = value  # the next lookup is a plain global
    return value


def __dir__() -> list[str]:
    """The public API only (what ``__all__`` lists), not the helpers this module imports."""
    return sorted(__all__)
