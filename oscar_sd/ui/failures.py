"""What the page says when something fails: one sentence the person can act on.

Every failure a handler meets becomes one of these sentences, shown on the tab's
status line (and given to API callers); none holds a secret or a traceback.
"""

from __future__ import annotations

import html

import gradio as gr

from .._errors import (
    AuthenticationError,
    InvalidRequestError,
    JobFailedError,
    OscarSDError,
    ServiceMisconfiguredError,
    ServiceNotFoundError,
    SignInExpired,
)
from .form import FIELD_LABELS
from .sessions import SESSION_EXPIRED, SessionExpired

UNEXPECTED = "Something went wrong on the server (it is logged). Try again in a moment."
#: The app's service is missing or unusable: nothing a page user can fix; the log says more.
SERVICE_NOT_READY = (
    "This app cannot make images yet: the image service it is set up to use is not "
    "ready on the cluster. Tell the person who runs this app (the details are in its log)."
)
#: A run no longer on disk (the results budget made room, or the session ended).
GONE_FROM_HISTORY = "Those images were deleted to make room for newer ones."

#: The service's error types (the ``type`` of its error object) and what the person can do.
ADVICE = {
    # The service refused the request itself: the same again fails the same way.
    "InvalidRequest": "Change the request and try again.",
    "ModelLoadError": "The service could not load its model: tell the cluster's administrator.",
}
OUT_OF_MEMORY = "It ran out of memory: ask for fewer or smaller images."
TRY_AGAIN = "Try again in a moment."


def advice_for(exc: JobFailedError) -> str:
    """What a person can do about a failed job, by its cause."""
    said = str(exc).lower()
    if "out of memory" in said or "outofmemory" in said:
        return OUT_OF_MEMORY
    return ADVICE.get(exc.error_type or "", TRY_AGAIN)


def message_for(exc: BaseException) -> str:
    """The sentence shown for an error."""
    if isinstance(exc, InvalidRequestError):
        return f"{FIELD_LABELS.get(exc.field, exc.field)} {exc.problem}."
    if isinstance(exc, SessionExpired) and exc.reason:
        return exc.reason
    if isinstance(exc, SignInExpired):
        return str(exc)
    if isinstance(exc, (SessionExpired, AuthenticationError)):
        return SESSION_EXPIRED
    if isinstance(exc, (ServiceNotFoundError, ServiceMisconfiguredError)):
        return SERVICE_NOT_READY
    if isinstance(exc, JobFailedError):
        # The library's message carries the service's own words.
        said = str(exc).rstrip(".")
        return f"{said}. {advice_for(exc)}"
    if isinstance(exc, OscarSDError):
        return str(exc)  # the library's messages are written for people and hold no secrets
    return UNEXPECTED


def shown(message: str) -> gr.Error:
    """A gr.Error for ``message``; Gradio renders it as HTML, so it is escaped first.

    No toast (``visible=False``): the page says it on its status line, beside the
    gallery (``last_error``), where toasts piled up over the images. API callers
    get the message all the same.
    """
    return gr.Error(html.escape(message, quote=False), print_exception=False, visible=False)
