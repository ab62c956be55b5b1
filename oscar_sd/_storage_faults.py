"""What a failed storage call means: an outage to ride out, a refusal, or a real error.

MinIO restarts on every OSCAR service create and delete (grycap/oscar
``pkg/handlers/create.go`` and ``delete.go`` call ``RestartServer`` in
``pkg/utils/minio.go``, MinIO's admin ``ServiceRestart``). MinIO then closes its
listening socket (minio/minio ``internal/http/server.go`` ``Shutdown``: new
connections are refused, a request on a kept-alive one is answered 503 with
``Connection: close``) and re-executes itself (``cmd/service.go``
``restartProcess``: ``syscall.Exec``), which closes every open and idle
connection; the new process answers 503 ``XMinioServerNotInitialized`` until it
is ready. Behind an Ingress the same moments are a 502 or 503 from the proxy.

So a call can fail in three ways worth retrying, and they differ in one thing
that matters: whether the server may have carried the request out.
"""

from __future__ import annotations

import http.client
from typing import Literal

import urllib3.exceptions
from minio.error import InvalidResponseError, S3Error, ServerError

#: ``refused``: nothing reached the server (connection refused, connect timeout);
#: ``busy``: the server answered that it did not do it (503);
#: ``cut``: the connection broke or a proxy gave up (502/504): it may have been done.
Outage = Literal["refused", "busy", "cut"]

#: Statuses of an outage, not of the request: a restarting MinIO or a proxy in front of it.
OUTAGE_STATUSES: dict[int, Outage] = {502: "cut", 503: "busy", 504: "cut"}
#: S3 error codes that refuse the keys themselves: every call fails, not only one.
KEYS_REFUSED = {
    "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
    "AccessKeyDisabled",
}


def http_answer(exc: BaseException) -> tuple[int, str] | None:
    """(HTTP status, S3 error code or "") when the server answered, else None."""
    if isinstance(exc, S3Error):
        return int(getattr(exc.response, "status", 0) or 0), exc.code or ""
    if isinstance(exc, InvalidResponseError):  # an answer that is not S3's XML
        return int(getattr(exc, "_code", 0) or 0), ""
    if isinstance(exc, ServerError):
        return exc.status_code, ""
    return None


def outage_kind(exc: BaseException) -> Outage | None:
    """How ``exc`` is part of a storage outage (a restart), or None when it is not."""
    answer = http_answer(exc)
    if answer is not None:
        return OUTAGE_STATUSES.get(answer[0])
    if isinstance(exc, urllib3.exceptions.MaxRetryError) and exc.reason is not None:
        return outage_kind(exc.reason)
    # urllib3's NewConnectionError (refused, no such host) is a ConnectTimeoutError.
    if isinstance(exc, (urllib3.exceptions.ConnectTimeoutError, ConnectionRefusedError)):
        return "refused"
    if isinstance(exc, (urllib3.exceptions.ProtocolError, urllib3.exceptions.IncompleteRead,
                        http.client.HTTPException, ConnectionError)):
        return "cut"  # reset, closed mid-answer, or a stale kept-alive connection
    return None  # read timeouts (a hung server), TLS errors, our own bugs: not a restart


def listen_refusal(exc: BaseException) -> str | None:
    """Why the server refused the listen request itself ("403 AccessDenied", "501"),
    or None when the failure is an outage or refuses the keys (every call would fail).

    MinIO answers a user without ``s3:ListenBucketNotification`` (a restricted
    service's users, grycap/oscar ``pkg/utils/minio.go``) 403 AccessDenied; servers
    without the extension answer 405 or 501; proxies answer in plain text.
    """
    answer = http_answer(exc)
    if answer is None:
        return None
    status, code = answer
    if code in KEYS_REFUSED or status in OUTAGE_STATUSES:
        return None
    if status == 501 or (400 <= status < 500 and status not in (408, 429)):
        return f"{status} {code}".strip()
    return None


def trouble_words(exc: BaseException) -> str:
    """What a person is told while storage fails: "cannot reach" only when it did not
    answer, or answered that it is restarting (never the message itself: it may carry
    URLs and headers)."""
    answer = http_answer(exc)
    if answer is None or answer[0] in OUTAGE_STATUSES:
        return "Cannot reach the cluster's storage"
    status, code = answer
    return f"The cluster's storage refuses requests ({code or f'HTTP {status}'})"
