"""A history in a bucket of the signed-in identity, on the cluster's MinIO.

Who may read it is MinIO's own policy, as OSCAR writes it (grycap/oscar
``pkg/handlers/buckets/create_bucket.go``, ``pkg/utils/minio.go``
``SetPolicies``, since v3.6.0): ``POST /system/buckets`` with an OIDC token
makes a private bucket and gives its owner, and only them, ``s3:*`` on it.
A new OIDC user's MinIO keys (``CreateMinIOUser``) carry no policy of their
own, so they cannot make a bucket themselves: the buckets API is the way,
and OSCAR's dashboard then lists the bucket as theirs.

With basic auth the app holds the cluster's MinIO root keys (``/system/config``
answers them to the one admin account): one bucket, made with those keys,
holds the history of that account, shared by everyone who logs in with it.
"""

from __future__ import annotations

import hashlib
import logging

import anyio.to_thread
from minio.error import S3Error

from .._cluster import OscarCluster
from .._errors import ClusterRequestError, ClusterUnreachableError
from .._storage import MinioStorage, storage_error
from ._budget import HistoryBudget
from ._history import History

log = logging.getLogger("oscar_sd.history")

#: The bucket of the basic-auth account's history.
SHARED_BUCKET = "oscar-sd-history"


def history_bucket(uid: str | None) -> str:
    """The history bucket of OIDC user ``uid`` (None: the basic-auth account).

    A hash of the uid: EGI uids hold ``@`` and are longer than a bucket name may be.
    """
    if uid is None:
        return SHARED_BUCKET
    return f"{SHARED_BUCKET}-{hashlib.sha256(uid.encode()).hexdigest()[:20]}"


class MinioObjects:
    """:class:`~oscar_sd.history.Objects` as objects of ``bucket``."""

    def __init__(self, storage: MinioStorage, bucket: str) -> None:
        self.storage = storage
        self.bucket = bucket
        self.description = f"your bucket {bucket!r} on the cluster"
        self.place = f"{storage.endpoint}/{bucket}"

    def put(self, key: str, data: bytes) -> None:
        content_type = ("image/png" if key.endswith(".png") else "application/json"
                        if key.endswith(".json") else "application/octet-stream")
        self.storage.put(self.bucket, key, data, content_type)

    def get(self, key: str) -> bytes:
        return self._read(key)

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        return self._read(key, (offset, length))

    def _read(self, key: str, byte_range: tuple[int, int] | None = None) -> bytes:
        try:
            return self.storage.get(self.bucket, key, byte_range=byte_range)
        except S3Error as exc:
            if exc.code == "NoSuchKey":
                raise KeyError(key) from None
            raise

    def list(self, prefix: str) -> list[str]:
        return list(self.storage.list_keys(self.bucket, prefix))

    def folders(self, prefix: str) -> list[str]:
        return self.storage.list_folders(self.bucket, prefix)

    def locate(self, key: str, expires: float) -> str:
        return self.storage.presigned_get(self.bucket, key, expires)

    def remove(self, keys: list[str]) -> None:
        failed = self.storage.remove(self.bucket, keys)
        if failed:
            raise OSError(f"{len(failed)} history object(s) could not be deleted")


async def cluster_history(
    cluster: OscarCluster, storage: MinioStorage, uid: str | None,
    budget: HistoryBudget | None = None,
) -> History:
    """The history of the identity whose keys ``storage`` holds, its bucket made if need be.

    Raises :class:`ClusterUnreachableError` when the bucket cannot be reached or made.
    """
    bucket = history_bucket(uid)
    if not await _reachable(storage, bucket):
        if uid is None:  # the root keys make it themselves
            await _make_bucket(storage, bucket)
        else:
            await _create_through_oscar(cluster, bucket)
        if not await _reachable(storage, bucket):
            raise ClusterUnreachableError(
                f"Your history bucket {bucket!r} exists but your storage keys cannot "
                "read it. Ask the cluster administrator to check its owner."
            )
    log.info("history in bucket %s", bucket)
    return History(MinioObjects(storage, bucket), budget, shared=uid is None)


async def _reachable(storage: MinioStorage, bucket: str) -> bool:
    """True when the bucket exists and these keys may use it."""
    try:
        return bool(await anyio.to_thread.run_sync(storage.check_bucket, bucket))
    except S3Error as exc:
        if exc.code == "AccessDenied":  # a user's keys before OSCAR gave them the bucket
            return False
        raise storage_error(exc, storage.endpoint) from None
    except Exception as exc:
        raise storage_error(exc, storage.endpoint) from None


#: S3's answers to creating a bucket that exists (MinIO, cmd/api-errors.go): another
#: sign-in (or replica) made it between our look and our create.
_ALREADY_MADE = ("BucketAlreadyOwnedByYou", "BucketAlreadyExists")


async def _make_bucket(storage: MinioStorage, bucket: str) -> None:
    """Make ``bucket`` with the root keys; one made meanwhile by a racing sign-in is fine
    (the look that follows says whether these keys may use it)."""
    try:
        await anyio.to_thread.run_sync(storage.make_bucket, bucket)
    except S3Error as exc:
        if exc.code not in _ALREADY_MADE:
            raise storage_error(exc, storage.endpoint) from None
    except Exception as exc:
        raise storage_error(exc, storage.endpoint) from None


async def _create_through_oscar(cluster: OscarCluster, bucket: str) -> None:
    try:
        await cluster.call(
            cluster.client.create_bucket, bucket, "private",
            what=f"create your history bucket {bucket!r}",
        )
    except ClusterRequestError as exc:
        # "already exists": made by an earlier sign-in (or a replica racing this one).
        if "already exists" not in str(exc):
            raise
