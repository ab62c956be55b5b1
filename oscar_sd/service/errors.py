"""The failures the worker reports, each with its ``type`` and exit code.

A failed job writes ``<job>.error.json`` ``{"error": str(exc), "type": exc.kind}``
and exits with ``exc.exit_code``. Request problems are the library's own
:class:`~oscar_sd.InvalidRequestError` (it names the field); the rest live here.

Exit codes of ``python -m oscar_sd.service``:

==  =====================================================================
0   success: ``<job>.zip`` written
1   unexpected failure (a bug): ``type`` is ``InternalError``
2   the input is not a valid request: ``type`` is ``InvalidRequest``
3   the model could not be loaded: ``type`` is ``ModelLoadError``
4   the model loaded but generating failed: ``type`` is ``GenerationError``
5   the job's environment is incomplete (``INPUT_FILE_PATH`` or
    ``TMP_OUTPUT_DIR`` unset): no error object (there is no job name or no
    folder to write it to), the log says which variable is missing; or a
    setting of the service is wrong: ``type`` is ``ConfigurationError``
==  =====================================================================
"""

from __future__ import annotations

from .._errors import InvalidRequestError, OscarSDError

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_INVALID_REQUEST = 2
EXIT_MODEL_LOAD = 3
EXIT_GENERATION = 4
EXIT_ENVIRONMENT = 5


class ServiceError(OscarSDError):
    """A failure of the worker, reported to the app as ``{"error", "type"}``."""

    kind = "InternalError"
    exit_code = EXIT_INTERNAL


class ModelLoadError(ServiceError):
    """The model named by ``OSCAR_SD_MODEL`` could not be loaded."""

    kind = "ModelLoadError"
    exit_code = EXIT_MODEL_LOAD


class GenerationError(ServiceError):
    """The pipeline failed while making the images (out of memory, for one)."""

    kind = "GenerationError"
    exit_code = EXIT_GENERATION


class ConfigurationError(ServiceError):
    """A setting of the service (an ``OSCAR_SD_*`` variable of its FDL) is wrong."""

    kind = "ConfigurationError"
    exit_code = EXIT_ENVIRONMENT


def error_kind(exc: BaseException) -> str:
    """The ``type`` field of the error object for ``exc``."""
    if isinstance(exc, InvalidRequestError):
        return "InvalidRequest"
    if isinstance(exc, ServiceError):
        return exc.kind
    return ServiceError.kind


def exit_code_for(exc: BaseException) -> int:
    """The process exit code for ``exc``."""
    if isinstance(exc, InvalidRequestError):
        return EXIT_INVALID_REQUEST
    if isinstance(exc, ServiceError):
        return exc.exit_code
    return EXIT_INTERNAL
