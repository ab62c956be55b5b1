"""The storage half of ``oscar-sd doctor``: may this identity use the service's buckets?

Blocking (minio-py): each function runs in a worker thread, called by
``_doctor.py``. Nothing is written under the service's input folder, where any
object starts a job (grycap/oscar ``pkg/utils/minio.go`` filters by prefix
only); the probes go under the output folder, in ``.oscar-sd-probe/``, the
folder the warm replica's claim probe uses (``_claim_probe.py``).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from minio.error import S3Error

from ._claim_probe import PROBE_FOLDER, ClaimProbe, probe_conditional_put
from ._notify.source import ListenUnsupported
from ._storage import MinioStorage, StoragePath


@dataclass(frozen=True)
class Finding:
    """One storage check: ``ok``, what was found, and the fix when not ok."""

    ok: bool
    detail: str
    fix: str = ""


def _denied(exc: S3Error) -> bool:
    return exc.code in ("AccessDenied", "InvalidAccessKeyId", "AllAccessDisabled")


def check_buckets(storage: MinioStorage, input_path: StoragePath,
                  output_path: StoragePath) -> Finding:
    """List both folders; write, read and delete a probe object in the output folder."""
    where = f"{input_path.bucket}/{input_path.folder} and {output_path.bucket}/{output_path.folder}"
    key = f"{output_path.prefix}{PROBE_FOLDER}/{secrets.token_hex(8)}.txt"
    try:
        for path in (input_path, output_path):
            next(iter(storage.list_keys(path.bucket, path.prefix)), None)
        storage.put(output_path.bucket, key, b"oscar-sd doctor", "text/plain")
        readable = storage.get(output_path.bucket, key) == b"oscar-sd doctor"
        storage.remove(output_path.bucket, [key])
    except S3Error as exc:
        if _denied(exc):
            return Finding(
                False, f"this identity's storage keys may not use {where} ({exc.code})",
                "a service created with the admin password gives OIDC users no storage "
                "policy: deploy it with the owner's token (oscar-sd deploy --token ...) and "
                "--visibility restricted --allowed-users <ids>, or public")
        if exc.code == "NoSuchBucket":
            return Finding(False, f"a bucket of the service is missing ({exc.bucket_name})",
                           "deploy the service again (oscar-sd deploy): OSCAR makes its buckets")
        raise
    if not readable:
        return Finding(False, f"a probe written to {output_path.bucket} read back different",
                       "check the storage server")
    return Finding(True, f"{where}: listed, written, read, deleted")


def check_listen(storage: MinioStorage, output_path: StoragePath) -> Finding:
    """Open the listen stream the app opens on the output folder, then close it."""
    try:
        response = storage.open_listen(output_path.bucket, output_path.prefix)
    except ListenUnsupported as exc:
        if str(exc).startswith("403"):
            # MinIO's answer to a user without s3:ListenBucketNotification: the API is
            # there, this identity may not use it (grycap/oscar pkg/utils/minio.go gives
            # restricted users List/Get/Put/Delete only).
            return Finding(
                False, f"this identity may not listen to the output folder ({exc}): users "
                "of a restricted service get no s3:ListenBucketNotification; the app runs "
                "listing-only, results come a few seconds late",
                "make the service public, or give each user a private bucket "
                "(isolation_level: USER) where they may listen")
        return Finding(
            False, f"the storage offers no listen API ({exc}): the app runs listing-only, "
            "results come a few seconds late", "use MinIO as the cluster's storage")
    response.close()
    response.release_conn()
    return Finding(True, f"listen stream on {output_path.bucket}/{output_path.folder} opened")


def check_conditional_put(storage: MinioStorage, output_path: StoragePath) -> ClaimProbe:
    """The warm replica's claim probe (``_claim_probe.py``), on the output folder."""
    return probe_conditional_put(storage.client, output_path.bucket, output_path.folder)
