"""oscar_sd: text-to-image on an OSCAR cluster, from Python, a web page or a shell.

>>> import oscar_sd
>>> async def main():
...     async with oscar_sd.OscarSD.connect(
...         "https://oscar.example.org", user="alice", password="...",
...     ) as sd:
...         result = await sd.generate(oscar_sd.GenerationRequest(prompt="a red fox"))
...         print(result.images)
"""

from ._backend import Backend
from ._deploy import (
    DeployedService,
    DeployError,
    FDLError,
    JobState,
    ServiceStatus,
    deploy_service,
    service_status,
)
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
    ServiceNotFoundError,
    SignInExpired,
)
from ._local import LocalSD
from ._models import GenerationRequest, GenerationResult, Progress, ProgressCallback, Stage, Timings
from ._oscar import OscarSD
from ._settings import Settings
from ._stream import Backoff
from ._tokens import OidcToken

__all__ = [
    "AuthenticationError",
    "Backend",
    "Backoff",
    "ClusterRequestError",
    "ClusterUnreachableError",
    "DeployError",
    "DeployedService",
    "FDLError",
    "GenerationRequest",
    "GenerationResult",
    "GenerationTimeout",
    "InvalidRequestError",
    "InvalidResultError",
    "JobFailedError",
    "JobState",
    "LocalSD",
    "OidcToken",
    "OscarSD",
    "OscarSDError",
    "Progress",
    "ProgressCallback",
    "ServiceMisconfiguredError",
    "ServiceNotFoundError",
    "ServiceStatus",
    "Settings",
    "SignInExpired",
    "Stage",
    "Timings",
    "deploy_service",
    "service_status",
]
