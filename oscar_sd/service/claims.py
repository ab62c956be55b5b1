"""The warm worker's objects in MinIO: inputs, claims, results.

A replica claims request ``<job>`` by writing ``<output folder>/<job>.started.json``
with a conditional PUT, ``If-None-Match: *``: MinIO checks and writes under the
object's lock (``cmd/object-handlers.go`` PutObjectHandler, ``CheckPrecondFn``;
``cmd/object-handlers-common.go`` ``checkPreconditionsPUT``), so of two replicas
exactly one gets 200 and the other 412 PreconditionFailed, and moves on. The
same object is the started marker the app hears (:mod:`.marker`).

A claim holds ``expires_at``: a replica that dies mid-request leaves it behind,
and once it has expired another replica replaces it with ``If-Match: <its
ETag>`` (MinIO honours If-Match on PUT the same way). Two replicas that both
saw the expired claim send the same ETag; the first write changes it, so the
second gets 412: no window where both win. A claim the app wrote when it handed
the request to the per-job service (spill-over, ``oscar_sd/_claims.py``) never
expires: the request runs there, so no replica ever takes it. Expiry compares the claimer's clock
with the reader's, so it assumes clocks agree to well within the TTL (NTP).

Every method blocks (minio is a blocking library); the worker calls them from
its own threads, never from an event loop.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from urllib.parse import urlsplit

import certifi
import urllib3
from minio import Minio
from minio.error import S3Error

from .._claims import is_spilled
from .._models import MAX_INPUT_BYTES
from .._storage import StoragePath
from .marker import STARTED_SUFFIX, StartedMarker

logger = logging.getLogger("oscar_sd.service")

#: What a request's result is called: its presence means the request is done.
RESULT_SUFFIXES = (".zip", ".error.json")
#: The input objects the worker runs (the app ↔ service contract).
INPUT_SUFFIXES = (".json", ".txt")
_LOST = ("PreconditionFailed", "NoSuchKey", "412")


@dataclass(frozen=True)
class Listing:
    """What one look at the folders found (at most ``limit`` inputs)."""

    #: job -> input key, oldest first as the server lists them.
    inputs: dict[str, str]
    #: jobs that have a result.
    done: set[str]
    #: job -> seconds since its claim was last written (server time).
    claim_age: dict[str, float]


class WarmStore:
    """Input and output folders of the warm service, with one account's keys."""

    def __init__(
        self,
        endpoint: str,
        access_key: str,
        secret_key: str,
        *,
        input_path: StoragePath,
        output_path: StoragePath,
        region: str | None = None,
        verify: bool = True,
    ) -> None:
        url = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
        http = urllib3.PoolManager(
            maxsize=8,
            timeout=urllib3.Timeout(connect=5, read=30),
            retries=urllib3.Retry(total=3, connect=1, backoff_factor=0.2,
                                  status_forcelist=[500, 502, 503, 504]),
            cert_reqs="CERT_REQUIRED" if verify else "CERT_NONE",
            ca_certs=certifi.where(),
        )
        self.endpoint = f"{url.scheme}://{url.netloc}"
        self.input_path = input_path
        self.output_path = output_path
        self._client = Minio(url.netloc, access_key, secret_key, secure=url.scheme == "https",
                             region=region, http_client=http)
        #: False when the storage does not honour ``If-None-Match: *`` (the replica's
        #: start-up probe, :mod:`oscar_sd._claim_probe`): this replica is then the only
        #: claimer and claims by looking first, with plain PUTs.
        self.conditional = True

    @property
    def client(self) -> Minio:
        return self._client

    # -- inputs ---------------------------------------------------------------------

    def input_job(self, key: str) -> str | None:
        """The job of input ``key``, or None when it is not a request of this folder."""
        prefix = self.input_path.prefix
        if not key.startswith(prefix):
            return None
        name = key[len(prefix):]
        if "/" in name or not name.lower().endswith(INPUT_SUFFIXES):
            return None
        return name.rsplit(".", 1)[0] or None

    def read_input(self, key: str) -> bytes | None:
        """The input object's bytes; None once it is gone (its request was taken back)."""
        # A request is a few hundred bytes; with a start image, a few MiB at most.
        found = self._get(self.input_path.bucket, key, MAX_INPUT_BYTES)
        return None if found is None else found[1]

    def input_exists(self, key: str) -> bool:
        """Whether input ``key`` is still there (its request not finished nor taken back)."""
        return self._exists(self.input_path.bucket, key)

    def look(self, limit: int) -> Listing:
        """Inputs (at most ``limit``), finished jobs and claim ages: two listings."""
        inputs: dict[str, str] = {}
        for key, _ in self._list(self.input_path):
            job = self.input_job(key)
            if job is not None:
                inputs[job] = key
                if len(inputs) >= limit:
                    break
        done: set[str] = set()
        claim_age: dict[str, float] = {}
        if not inputs:
            return Listing(inputs, done, claim_age)  # an idle folder costs one listing
        now = datetime.now(timezone.utc)
        for key, modified in self._list(self.output_path):
            name = key[len(self.output_path.prefix):]
            for suffix in RESULT_SUFFIXES:
                if name.endswith(suffix):
                    done.add(name[: -len(suffix)])
            if name.endswith(STARTED_SUFFIX) and modified is not None:
                claim_age[name[: -len(STARTED_SUFFIX)]] = (now - modified).total_seconds()
        return Listing(inputs, done, claim_age)

    def _list(self, path: StoragePath) -> Iterator[tuple[str, datetime | None]]:
        for item in self._client.list_objects(path.bucket, prefix=path.prefix):
            if item.object_name is not None and not item.is_dir:
                yield item.object_name, item.last_modified

    # -- claims ---------------------------------------------------------------------

    def claim(self, job: str, replica: str, ttl: float) -> bool:
        """Claim ``job`` for ``replica`` for ``ttl`` seconds; False if another holds it."""
        key = self.output_path.key(job + STARTED_SUFFIX)
        body = claim_body(replica, ttl)
        if not self.conditional:
            return self._claim_alone(job, key, body)
        try:
            self._put(key, body, {"If-None-Match": "*"})
            return True
        except S3Error as exc:
            if exc.code not in _LOST:
                raise
        # Someone claimed it: take it over only if that claim has expired and
        # the request has no result (its replica died before finishing).
        held = self._read_claim(key)
        if held is None:
            return False  # released or tidied a moment ago: the next look decides
        etag, expires_at = held
        if expires_at > time.time() or self.has_result(job):
            return False
        try:
            self._put(key, body, {"If-Match": etag})
        except S3Error as exc:
            if exc.code in _LOST:
                return False  # another replica replaced it first
            raise
        logger.warning("Took over request %s: its claim expired", job)
        return True

    def _claim_alone(self, job: str, key: str, body: bytes) -> bool:
        """The only claimer's claim: look, then write (no other replica races it)."""
        held = self._read_claim(key)
        if held is not None and (held[1] > time.time() or self.has_result(job)):
            return False
        self._put(key, body, {})
        return True

    def release(self, job: str) -> None:
        """Give the claim on ``job`` back, so another replica runs it."""
        self._client.remove_object(self.output_path.bucket,
                                   self.output_path.key(job + STARTED_SUFFIX))

    def remove_outputs(self, names: list[str]) -> None:
        """Delete the objects ``names`` of the output folder (one batch request)."""
        from minio.deleteobjects import DeleteObject

        doomed = [DeleteObject(self.output_path.key(name)) for name in names]
        for error in self._client.remove_objects(self.output_path.bucket, doomed):
            logger.warning("Could not delete %s (%s)", error.name, error.code)

    def has_result(self, job: str) -> bool:
        return any(self._exists(self.output_path.bucket, self.output_path.key(job + suffix))
                   for suffix in RESULT_SUFFIXES)

    def _read_claim(self, key: str) -> tuple[str, float] | None:
        """(ETag, expires_at) of the claim at ``key``; expires_at 0 when unreadable."""
        found = self._get(self.output_path.bucket, key, 65536)
        if found is None:
            return None
        etag, data = found
        if is_spilled(data):
            return etag, float("inf")  # the per-job service runs it
        try:
            expires_at = float(json.loads(data).get("expires_at_epoch", 0))
        except (ValueError, AttributeError):
            expires_at = 0.0  # not a claim we can read: treat it as expired
        return etag, expires_at

    # -- objects --------------------------------------------------------------------

    def _exists(self, bucket: str, key: str) -> bool:
        try:
            self._client.stat_object(bucket, key)
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject"):
                return False
            raise
        return True

    def _get(self, bucket: str, key: str, limit: int) -> tuple[str, bytes] | None:
        """(ETag, at most ``limit`` bytes) of an object; None when it is not there."""
        try:
            response = self._client.get_object(bucket, key)
        except S3Error as exc:
            if exc.code == "NoSuchKey":
                return None
            raise
        try:
            return response.headers.get("ETag", ""), response.read(limit)
        finally:
            response.close()
            response.release_conn()

    # -- results --------------------------------------------------------------------

    def write_result(self, job: str, suffix: str, data: bytes, content_type: str) -> None:
        self._put(self.output_path.key(job + suffix), data, {"Content-Type": content_type})

    def _put(self, key: str, data: bytes, headers: dict[str, str]) -> None:
        # minio-py's put_object turns unknown headers into x-amz-meta-*; conditions
        # must travel as plain headers, which its _put_object sends as given.
        headers = {"Content-Type": "application/json", **headers}
        self._client._put_object(self.output_path.bucket, key, data,
                                 headers=headers)


def claim_body(replica: str, ttl: float) -> bytes:
    """The started marker with the claim's expiry: ``expires_at`` (ISO) and its epoch."""
    marker = json.loads(StartedMarker.now(job=replica).to_json())
    expires = time.time() + ttl
    marker["expires_at"] = datetime.fromtimestamp(expires, timezone.utc).isoformat(
        timespec="milliseconds")
    marker["expires_at_epoch"] = round(expires, 3)
    return json.dumps(marker).encode()
