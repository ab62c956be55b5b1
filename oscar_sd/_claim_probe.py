"""Does this storage refuse a second ``If-None-Match: *`` PUT? The warm claims depend on it.

Warm replicas claim a request by creating its started marker with
``If-None-Match: *`` (:mod:`oscar_sd.service.claims`): of two replicas exactly
one may succeed. MinIO honours that only in some releases (minio/minio
``cmd/object-handlers-common.go`` ``checkPreconditionsPUT``, ``isETagEqual``;
``cmd/erasure-object.go`` ``putObject``):

- before RELEASE.2024-05-07 ``*`` is compared as a literal ETag: the second
  PUT succeeds too, so two replicas could both run one request;
- RELEASE.2025-09-06 answers the *first* conditional PUT of a key (one that
  does not exist yet) with an error (NoSuchKey): no replica ever wins a claim;
- the others answer the second one 412 PreconditionFailed.

:func:`probe_conditional_put` tries it on a probe key of its own (created,
created again, deleted) and says which. It blocks (minio is a blocking
library): call it from a thread. It imports nothing heavier than minio, so
the warm replica and ``oscar-sd doctor`` both use it.

>>> probe = probe_conditional_put(client, "stable-diffusion-warm", "out")   # doctest: +SKIP
>>> probe.honoured, probe.problem                                          # doctest: +SKIP
(True, '')
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from minio import Minio
from minio.error import S3Error

#: Where the probe objects go, under the folder probed (never a request's name).
PROBE_FOLDER = ".oscar-sd-probe"
#: Releases to name in the advice (minio/minio tags).
FIXED_RELEASE = "RELEASE.2025-09-07T16-13-09Z"


@dataclass(frozen=True)
class ClaimProbe:
    """What the storage did with two ``If-None-Match: *`` PUTs of one new key."""

    #: The second PUT was refused with 412: claims are exclusive.
    honoured: bool
    #: "" when honoured; else what went wrong and what it means, in one sentence.
    problem: str = ""
    #: How to fix it ("" when honoured).
    fix: str = ""
    #: "honoured", "ignored" (both PUTs won), "refused" (the first PUT failed), "error".
    outcome: str = "honoured"


def probe_conditional_put(client: Minio, bucket: str, folder: str = "") -> ClaimProbe:
    """Create a probe key in ``bucket``/``folder`` twice with ``If-None-Match: *``, then
    delete it. Raises only for trouble unrelated to the condition (unreachable storage)."""
    base = f"{folder.strip('/')}/" if folder.strip("/") else ""
    key = f"{base}{PROBE_FOLDER}/{secrets.token_hex(8)}.json"
    try:
        try:
            _create(client, bucket, key, b'{"probe": 1}')
        except S3Error as exc:
            if exc.code in ("AccessDenied", "NoSuchBucket", "InvalidAccessKeyId"):
                raise
            return ClaimProbe(
                False,
                f"the storage refused a conditional PUT of a new key ({exc.code}), as MinIO "
                "RELEASE.2025-09-06 does: no warm replica could ever claim a request",
                f"upgrade MinIO to {FIXED_RELEASE} or later",
                "refused")
        try:
            _create(client, bucket, key, b'{"probe": 2}')
        except S3Error as exc:
            if exc.code in ("PreconditionFailed", "412"):
                return ClaimProbe(True)
            return ClaimProbe(
                False,
                f"the storage answered a second If-None-Match: * PUT with {exc.code}, "
                "not 412 PreconditionFailed",
                "use a MinIO release that honours conditional PUTs "
                "(RELEASE.2024-05-07 or later, not RELEASE.2025-09-06)",
                "error")
        return ClaimProbe(
            False,
            "the storage let a second If-None-Match: * PUT overwrite the key (MinIO before "
            "RELEASE.2024-05-07 compares * as a literal ETag): two replicas could both "
            "claim one request",
            "upgrade MinIO to RELEASE.2024-05-07 or later (not RELEASE.2025-09-06)",
            "ignored")
    finally:
        try:
            client.remove_object(bucket, key)
        except Exception:  # a probe left behind is a few bytes; the answer matters more
            pass


def _create(client: Minio, bucket: str, key: str, body: bytes) -> None:
    # minio-py's put_object turns unknown headers into x-amz-meta-*; the condition
    # must travel as a plain header, which _put_object sends as given.
    client._put_object(bucket, key, body, headers={
        "Content-Type": "application/json", "If-None-Match": "*"})
