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
from ._errors import (
    AuthenticationError,
    ClusterUnreachableError,
    GenerationTimeout,
    InvalidRequestError,
    InvalidResultError,
    JobFailedError,
    OscarSDError,
    ServiceMisconfiguredError,
    ServiceNotFoundError,
)
from ._hub import Backoff
from ._models import GenerationRequest, GenerationResult, Progress, ProgressCallback, Stage, Timings
from ._oscar import OscarSD
from ._settings import Settings

__all__ = [
    "AuthenticationError",
    "Backend",
    "Backoff",
    "ClusterUnreachableError",
    "GenerationRequest",
    "GenerationResult",
    "GenerationTimeout",
    "InvalidRequestError",
    "InvalidResultError",
    "JobFailedError",
    "OscarSD",
    "OscarSDError",
    "Progress",
    "ProgressCallback",
    "ServiceMisconfiguredError",
    "ServiceNotFoundError",
    "Settings",
    "Stage",
    "Timings",
]
