"""Conditional PUT as each MinIO release answers it (the double's ``minio_release`` knob).

Read in minio/minio:

- ``cmd/object-handlers-common.go`` ``checkPreconditionsPUT`` compares the
  ``If-None-Match`` value with the existing object's ETag through
  ``isETagEqual``. Only since RELEASE.2024-05-07T06-41-25Z (commit 888d2bb1d,
  "support ETag value to be '*'") does ``isETagEqual`` treat ``*`` as "any
  ETag"; before, ``*`` is compared as a literal ETag, which no object has, so
  ``If-None-Match: *`` on an existing key writes over it: two creators both win.
- ``cmd/erasure-object.go`` ``putObject`` in RELEASE.2025-09-06T17-38-46Z
  (commit 558fc1c09) returns the object-not-found error for any conditional PUT
  whose key does not exist yet, which the client sees as 404 NoSuchKey; the next
  release (RELEASE.2025-09-07T16-13-09Z, commit 07c3a429b) keeps that for
  ``If-Match`` only.

Every other release honours ``If-None-Match: *`` with 412 (moto does that for us).
"""

from __future__ import annotations

import re

#: What OSCAR's own deploy script installs (grycap/oscar ``deploy/kind-deploy.sh``).
DEFAULT_RELEASE = "RELEASE.2024-12-18T13-15-44Z"
STAR_HONOURED_SINCE = "2024-05-07T06-41-25Z"
MISSING_KEY_BROKEN = ("2025-09-06T17-38-46Z", "2025-09-07T16-13-09Z")

_RELEASE = re.compile(r"^RELEASE\.(\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}Z)$")


def release_stamp(release: str) -> str:
    """``2024-12-18T13-15-44Z`` of ``RELEASE.2024-12-18T13-15-44Z`` (they sort as dates)."""
    match = _RELEASE.match(release)
    if match is None:
        raise ValueError(f"{release!r} is not a MinIO release name like {DEFAULT_RELEASE}")
    return match.group(1)


def star_is_literal(release: str) -> bool:
    """Before 2024-05-07, ``If-None-Match: *`` never matches an existing object."""
    return release_stamp(release) < STAR_HONOURED_SINCE


def refuses_missing_key(release: str) -> bool:
    """2025-09-06 answers any conditional PUT on a key that does not exist with NoSuchKey."""
    return MISSING_KEY_BROKEN[0] <= release_stamp(release) < MISSING_KEY_BROKEN[1]
