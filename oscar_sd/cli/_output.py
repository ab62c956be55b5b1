"""What reaches the terminal: quiet libraries, one line per error, no secrets."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator

from .._errors import (
    AuthenticationError,
    ClusterUnreachableError,
    InvalidRequestError,
)
from ._common import REQUEST_OPTIONS

#: Libraries whose log a normal run keeps to errors (``-v`` shows it all).
NOISY_LIBRARIES = ("diffusers", "transformers", "huggingface_hub", "torch", "PIL", "urllib3",
                   "minio", "httpx", "filelock")


@contextlib.contextmanager
def terminal_output(*, verbose: bool) -> Iterator[None]:
    """What reaches the terminal while a command runs.

    oscar-sd's own warnings come as ``oscar-sd: ...`` lines. The libraries
    under it (torch, diffusers, transformers, urllib3, ...) and Python's
    warnings stay quiet unless ``verbose``, which shows everything from INFO up.
    transformers and diffusers read their level from the environment once, at
    import, hence the variables; everything is put back when the command ends.
    """
    if not logging.getLogger().handlers:
        logging.basicConfig(format="oscar-sd: %(name)s: %(message)s")
    root = logging.getLogger()
    loggers = [root, *(logging.getLogger(name) for name in NOISY_LIBRARIES)]
    levels = [logger.level for logger in loggers]
    variables = {"TRANSFORMERS_VERBOSITY": "error", "DIFFUSERS_VERBOSITY": "error",
                 "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1"}
    saved = {name: os.environ.get(name) for name in variables}
    with warnings.catch_warnings():
        if verbose:
            root.setLevel(logging.INFO)
        else:
            root.setLevel(logging.WARNING)
            for logger in loggers[1:]:
                logger.setLevel(logging.ERROR)
            for name, value in variables.items():
                os.environ.setdefault(name, value)
            warnings.simplefilter("ignore")
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels, strict=True):
                logger.setLevel(level)
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


def describe(exc: Exception) -> str:
    """The error as one sentence, with what to do about it."""
    if isinstance(exc, InvalidRequestError):
        option = REQUEST_OPTIONS.get(exc.field, exc.field)
        # "--steps: must be ..." for an option, "the prompt is empty: ..." for the words.
        joint = ": " if option.startswith("-") else " "
        return f"{option}{joint}{exc.problem}"
    message = str(exc)
    if isinstance(exc, AuthenticationError):
        message += (
            " (the user comes from --user or OSCAR_SD_USER, the password from "
            "OSCAR_SD_PASSWORD or the prompt, a token from --token or OSCAR_SD_TOKEN)"
        )
    elif isinstance(exc, ClusterUnreachableError):
        message += " (the endpoint comes from --endpoint or the oscar_endpoint variable)"
    return message


def report(message: str, secrets: list[str]) -> None:
    """Print one error line on stderr. Secrets are masked should one slip into a message."""
    for secret in secrets:
        message = message.replace(secret, "***")
    print(f"oscar-sd: error: {' '.join(message.split())}", file=sys.stderr)
