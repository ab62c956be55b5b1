"""The cluster's MinIO, as the OSCAR backend uses it.

Every method here blocks (minio is a blocking library): callers run them
through ``anyio.to_thread.run_sync``. Every call but the listen request rides
out a MinIO restart through the client's :class:`OutageGate` (refused or reset
connections, 502/503/504) for up to ``outage_timeout`` seconds; the hub
reconnects the listen stream itself.
"""

from __future__ import annotations

import datetime
import hashlib
import io
from dataclasses import dataclass
from urllib.parse import urlsplit

import certifi
import urllib3
from minio import Minio
from minio.datatypes import Object
from minio.deleteobjects import DeleteObject
from minio.error import S3Error
from urllib3.exceptions import (
    ConnectTimeoutError,
    MaxRetryError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
    SSLError,
)

from ._errors import ClusterUnreachableError, InvalidResultError
from ._notify.backoff import Backoff
from ._notify.source import ListenResponse, ListenUnsupported
from ._outage_gate import OutageGate
from ._retry_log import summarise_urllib3_retries
from ._storage_faults import http_answer, listen_refusal

#: The largest result object downloaded (a zip of 8 PNGs is a few MB).
MAX_RESULT_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class StoragePath:
    """A service's ``input[]``/``output[]`` path: the first segment is the bucket."""

    bucket: str
    folder: str

    @classmethod
    def parse(cls, path: str) -> StoragePath:
        bucket, _, folder = path.strip("/").partition("/")
        return cls(bucket, folder.strip("/"))

    def key(self, name: str) -> str:
        return f"{self.folder}/{name}" if self.folder else name

    @property
    def prefix(self) -> str:
        return f"{self.folder}/" if self.folder else ""


class MinioStorage:
    """Uploads, downloads, listings and the listen stream, through minio-py."""

    def __init__(
        self,
        endpoint: str,
        access_key: str,
        secret_key: str,
        *,
        region: str | None = None,
        verify: bool = True,
        stall_timeout: float = 5.0,
        pool_size: int = 32,
        outage_timeout: float = 60.0,
        backoff: Backoff | None = None,
    ) -> None:
        summarise_urllib3_retries()  # an outage retries every second: log it once a minute
        url = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
        self.endpoint = f"{url.scheme}://{url.netloc}"
        secure = url.scheme == "https"
        options = {
            "cert_reqs": "CERT_REQUIRED" if verify else "CERT_NONE",
            "ca_certs": certifi.where(),
        }
        # Every worker thread may hold a connection at once: ``pool_size`` is
        # at least the number of threads that use this client (see connect()).
        # urllib3 retries nothing: the gate does, shared by every thread, so that
        # a restart costs one probe at a time rather than a burst from each call.
        requests_pool = urllib3.PoolManager(
            maxsize=pool_size,
            timeout=urllib3.Timeout(connect=10, read=120),
            retries=False,
            **options,
        )
        self.gate = OutageGate(outage_timeout, backoff)
        # The listen stream gets its own pool: its read timeout is the stall
        # limit, and the hub, not urllib3, decides when to reconnect.
        listen_pool = urllib3.PoolManager(
            maxsize=2,
            timeout=urllib3.Timeout(connect=10, read=stall_timeout),
            retries=urllib3.Retry(total=0),
            **options,
        )
        self.pool_size = pool_size
        self._client = Minio(
            url.netloc,
            access_key,
            secret_key,
            secure=secure,
            region=region,
            http_client=requests_pool,
        )
        self._listen_client = Minio(
            url.netloc,
            access_key,
            secret_key,
            secure=secure,
            region=region,
            http_client=listen_pool,
        )

    @property
    def client(self) -> Minio:
        """The minio-py client of the ordinary calls (for probes that need its own calls)."""
        return self._client

    def check_bucket(self, bucket: str) -> bool:
        return bool(self.gate.call(lambda: self._client.bucket_exists(bucket)))

    def make_bucket(self, bucket: str) -> None:
        """Create ``bucket`` (the root keys may; a user's keys may not, see history/_minio.py)."""
        self._client.make_bucket(bucket)

    def presigned_get(self, bucket: str, key: str, expires: float) -> str:
        """A URL that reads ``key`` for ``expires`` seconds (S3 allows 7 days at most)."""
        return self._client.presigned_get_object(
            bucket, key, expires=datetime.timedelta(seconds=expires)
        )

    def put(self, bucket: str, key: str, data: bytes, content_type: str,
            metadata: dict[str, str] | None = None) -> None:
        """Upload ``data`` (with ``metadata`` as ``x-amz-meta-*`` headers). A connection
        cut mid-upload may still have stored it, and a second PUT of an input would
        start a second job: the object is looked at before it is sent again."""
        self.gate.call(
            lambda: self._client.put_object(
                bucket, key, io.BytesIO(data), len(data), content_type=content_type,
                metadata=metadata),  # type: ignore[arg-type]
            done_anyway=lambda: self.holds(bucket, key, data),
        )

    def metadata(self, bucket: str, key: str, patient: bool = True) -> dict[str, str] | None:
        """The ``x-amz-meta-*`` fields of ``key`` (names lower case, prefix dropped), or
        None when there is no such object."""
        stat = self._stat(bucket, key, patient)
        if stat is None:
            return None
        return {name.lower()[len("x-amz-meta-"):]: value
                for name, value in (stat.metadata or {}).items()
                if name.lower().startswith("x-amz-meta-")}

    def holds(self, bucket: str, key: str, data: bytes) -> bool:
        """Whether ``key`` exists with exactly ``data`` (its size and, for a plain PUT,
        its ETag, the MD5 of the body)."""
        stat = self._stat(bucket, key)
        if stat is None or stat.size != len(data):
            return False
        etag = (stat.etag or "").strip('"')
        return len(etag) != 32 or etag == hashlib.md5(data, usedforsecurity=False).hexdigest()

    def _stat(self, bucket: str, key: str, patient: bool = True) -> Object | None:
        """The object's stat through the gate, or None when there is no such object."""
        try:
            return self.gate.call(lambda: self._client.stat_object(bucket, key),
                                  patient=patient)
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject"):
                return None
            raise

    def put_if_absent(self, bucket: str, key: str, data: bytes, content_type: str) -> bool:
        """Create ``key`` unless it exists (``If-None-Match: *``, which MinIO checks and
        writes under the object's lock): False when it existed (412). Not through the
        gate: a repeat after a cut would read the first attempt's success as a 412."""
        # minio-py's put_object turns unknown headers into x-amz-meta-*; _put_object
        # sends them as given (as oscar_sd/service/claims.py does for the replicas).
        try:
            self._client._put_object(bucket, key, data, headers={
                "Content-Type": content_type, "If-None-Match": "*"})
        except S3Error as exc:
            if exc.code in ("PreconditionFailed", "412"):
                return False
            raise
        return True

    def get(self, bucket: str, key: str, limit: int = MAX_RESULT_BYTES,
            byte_range: tuple[int, int] | None = None) -> bytes:
        """Download ``key`` (at most ``limit`` bytes), or the ``byte_range`` (offset,
        length) of it; a cut download starts again."""
        data = self.gate.call(lambda: self._get_once(bucket, key, limit, byte_range))
        assert data is not None
        return data

    def _get_once(self, bucket: str, key: str, limit: int,
                  byte_range: tuple[int, int] | None = None) -> bytes:
        offset, length = byte_range or (0, 0)
        response = self._client.get_object(bucket, key, offset=offset, length=length)
        try:
            declared = int(response.headers.get("Content-Length") or 0)
            if declared > limit:
                raise InvalidResultError(
                    f"The result object is {declared} bytes; at most {limit} are accepted."
                )
            data = response.read(limit + 1)  # never more than the limit, whatever was declared
        finally:
            response.close()
            response.release_conn()
        if len(data) > limit:
            raise InvalidResultError(f"The result object is larger than {limit} bytes.")
        return data

    @property
    def for_hub(self) -> HubStorage:
        """This client as the notification hub uses it (each call tried once)."""
        return HubStorage(self)

    def remove(self, bucket: str, keys: list[str], patient: bool = True) -> list[str]:
        """Delete ``keys`` in one request (S3's multi-object delete); returns those that failed.
        Deleting twice is harmless, so a cut request is simply sent again."""

        def remove_once() -> list[str]:
            errors = self._client.remove_objects(bucket, [DeleteObject(key) for key in keys])
            return [error.name or "?" for error in errors]  # the request goes out here

        return self.gate.call(remove_once, patient=patient) or []

    def list_keys(self, bucket: str, prefix: str, patient: bool = True) -> list[str]:
        """Every key under ``prefix`` (all pages); a cut listing starts again."""

        def list_once() -> list[str]:
            items = self._client.list_objects(bucket, prefix=prefix, recursive=True)
            return [item.object_name for item in items if item.object_name is not None]

        return self.gate.call(list_once, patient=patient) or []

    def list_folders(self, bucket: str, prefix: str) -> list[str]:
        """The names of the folders directly under ``prefix`` (one listing with the
        delimiter "/", whose common prefixes carry no dates to parse): far cheaper than
        every key below them, which minio-py parses one XML element and date at a time."""

        def list_once() -> list[str]:
            items = self._client.list_objects(bucket, prefix=prefix, recursive=False)
            return [item.object_name[len(prefix):].rstrip("/") for item in items
                    if item.is_dir and item.object_name]

        return self.gate.call(list_once) or []

    def list_aged(self, bucket: str, prefix: str, limit: int,
                  patient: bool = True) -> list[tuple[str, float]]:
        """Up to ``limit`` (key, last modified as a Unix time) directly under ``prefix``
        (no deeper folders), for the orphan sweep."""

        def list_once() -> list[tuple[str, float]]:
            aged = []
            for item in self._client.list_objects(bucket, prefix=prefix, recursive=False):
                if item.is_dir or item.object_name is None or item.last_modified is None:
                    continue
                aged.append((item.object_name, item.last_modified.timestamp()))
                if len(aged) >= limit:
                    break
            return aged

        return self.gate.call(list_once, patient=patient) or []

    def open_listen(self, bucket: str, prefix: str) -> ListenResponse:
        """Open MinIO's listen stream and return the live response.

        minio-py's public ``listen_bucket_notification`` iterator swallows
        keep-alives and reconnects silently, which would hide exactly the gaps
        the hub must catch up on. So the hub reads the same signed request's
        response itself. No ``ping``: MinIO then writes a space every 500 ms,
        and since it writes nothing (headers included) before its first tick,
        the connect completes in about half a second instead of ``ping``
        seconds (cmd/listen-notification-handlers.go).

        Raises :class:`ListenUnsupported` when the server refuses the listen
        request itself while it may still serve the others: any refusal
        (403 AccessDenied, as MinIO answers a restricted service's users; 405;
        501; in S3's XML or a proxy's plain text; ``_storage_faults.listen_refusal``),
        or, like AWS S3, which ignores unknown parameters, a plain XML listing.
        """
        try:
            response = self._listen_client._execute(
                "GET",
                bucket,
                query_params={"prefix": prefix, "suffix": "", "events": ("s3:ObjectCreated:*",)},
                preload_content=False,
            )
        except Exception as exc:
            refusal = listen_refusal(exc)
            if refusal is not None:
                raise ListenUnsupported(refusal) from None
            raise
        if "xml" in (response.headers.get("Content-Type") or ""):
            response.close()
            response.release_conn()
            raise ListenUnsupported("an XML answer")
        return response  # type: ignore[return-value]


class HubStorage:
    """The storage calls of a notification hub: each tried once, never waiting out an
    outage in the gate. The hub retries on its own schedule (reconnect backoff,
    reconciliation rounds, background deletions) and must stop at once when closed."""

    def __init__(self, storage: MinioStorage) -> None:
        self.storage = storage

    def open_listen(self, bucket: str, prefix: str) -> ListenResponse:
        return self.storage.open_listen(bucket, prefix)

    def list_keys(self, bucket: str, prefix: str) -> list[str]:
        return self.storage.list_keys(bucket, prefix, patient=False)

    def remove(self, bucket: str, keys: list[str]) -> list[str]:
        return self.storage.remove(bucket, keys, patient=False)

    def list_aged(self, bucket: str, prefix: str, limit: int) -> list[tuple[str, float]]:
        return self.storage.list_aged(bucket, prefix, limit, patient=False)

    def metadata(self, bucket: str, key: str) -> dict[str, str] | None:
        return self.storage.metadata(bucket, key, patient=False)


def storage_error(exc: BaseException, endpoint: str) -> Exception:
    """Translate a minio/urllib3 failure into an error a person can act on."""
    if isinstance(exc, S3Error):
        if exc.code in {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"}:
            return ClusterUnreachableError(
                f"The cluster's storage refused access ({exc.code}). "
                "Ask the cluster administrator to check the service's bucket permissions."
            )
        return ClusterUnreachableError(f"The cluster's storage answered {exc.code}.")
    answer = http_answer(exc)
    if answer is not None:  # it answered, but not in S3's words (a proxy in front of it)
        return ClusterUnreachableError(
            f"The cluster's storage at {endpoint} answered HTTP {answer[0]}. "
            "Check that the cluster is up; if it stays so, tell the cluster administrator."
        )
    return ClusterUnreachableError(
        f"Cannot reach the cluster's storage (MinIO) at {endpoint}: {_in_words(exc)}. "
        "Check that the cluster is up."
    )


def _in_words(exc: BaseException) -> str:
    """What went wrong on the way to the storage, for a person (urllib3's class names,
    such as MaxRetryError, say nothing to them; the log keeps those)."""
    cause = exc.reason if isinstance(exc, MaxRetryError) and exc.reason else exc
    if isinstance(cause, SSLError):
        return "its TLS certificate was not accepted"
    # urllib3's NewConnectionError (refused) is a ConnectTimeoutError: it goes first.
    if isinstance(cause, (NewConnectionError, ConnectionRefusedError)):
        return "the connection was refused"
    if isinstance(cause, (ConnectTimeoutError, ReadTimeoutError, TimeoutError)):
        return "it did not answer in time"
    if isinstance(cause, (ProtocolError, ConnectionError)):
        return "the connection was dropped"
    return "it did not answer"
