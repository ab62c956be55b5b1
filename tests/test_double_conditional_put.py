"""Conditional PUT in the double, as MinIO serves it, and the exclusive started marker on it.

MinIO (``cmd/object-handlers.go`` PutObjectHandler sets ``CheckPrecondFn``;
``cmd/object-handlers-common.go`` ``checkPreconditionsPUT``) answers 412
PreconditionFailed when ``If-None-Match: *`` meets an existing key or
``If-Match`` meets another ETag, and evaluates the condition under the
object's write lock: of two racing claims exactly one wins.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from minio import Minio
from minio.error import S3Error

from oscar_sd.service import StartedMarker, write_started_marker
from oscar_sd.service.marker import OutputStore
from tests.double import ClusterDouble

BUCKET = "stable-diffusion"


@pytest.fixture
def double() -> Iterator[ClusterDouble]:
    with ClusterDouble() as cluster:
        cluster.make_bucket(BUCKET)
        yield cluster


def client(double: ClusterDouble) -> Minio:
    return Minio(double.minio_endpoint.split("://", 1)[1], double.minio_access_key,
                 double.minio_secret_key, secure=False)


def store(double: ClusterDouble) -> OutputStore:
    return OutputStore(endpoint=double.minio_endpoint.split("://", 1)[1], secure=False,
                       verify=True, region=None, bucket=BUCKET, folder="out",
                       access_key=double.minio_access_key, secret_key=double.minio_secret_key)


def test_if_none_match_star_is_412_precondition_failed_xml_when_the_key_exists(
    double: ClusterDouble,
) -> None:
    minio = client(double)
    minio._put_object(BUCKET, "out/a.started.json", b"first", headers={"If-None-Match": "*"})
    with pytest.raises(S3Error) as refused:
        minio._put_object(BUCKET, "out/a.started.json", b"second",
                          headers={"If-None-Match": "*"})
    assert refused.value.code == "PreconditionFailed"
    assert refused.value.response.status == 412
    assert double.get_object(BUCKET, "out/a.started.json") == b"first"


def test_if_match_replaces_only_the_version_it_names(double: ClusterDouble) -> None:
    minio = client(double)
    first = minio._put_object(BUCKET, "out/b.started.json", b"one", headers={})
    with pytest.raises(S3Error) as refused:
        minio._put_object(BUCKET, "out/b.started.json", b"two",
                          headers={"If-Match": '"0123456789abcdef0123456789abcdef"'})
    assert refused.value.code == "PreconditionFailed"
    minio._put_object(BUCKET, "out/b.started.json", b"two", headers={"If-Match": first.etag})
    assert double.get_object(BUCKET, "out/b.started.json") == b"two"


def test_racing_exclusive_writes_have_exactly_one_winner_per_key(double: ClusterDouble) -> None:
    """The condition and the write are one step, as under MinIO's object lock."""
    keys, racers = 30, 6
    winners: dict[str, list[int]] = {f"out/{n}.started.json": [] for n in range(keys)}
    barrier = threading.Barrier(racers)
    errors: list[BaseException] = []

    def race(racer: int) -> None:
        minio = client(double)
        barrier.wait()
        for key in winners:
            try:
                minio._put_object(BUCKET, key, f"{racer}".encode(),
                                  headers={"If-None-Match": "*"})
                winners[key].append(racer)
            except S3Error as exc:
                if exc.code != "PreconditionFailed":
                    errors.append(exc)

    threads = [threading.Thread(target=race, args=(n,)) for n in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    assert {key: len(won) for key, won in winners.items()} == {key: 1 for key in winners}
    for key, (racer,) in winners.items():
        assert double.get_object(BUCKET, key) == f"{racer}".encode()


def test_the_exclusive_started_marker_is_written_once_then_taken(double: ClusterDouble) -> None:
    mine, theirs = StartedMarker("replica-a", "h", "t1"), StartedMarker("replica-b", "h", "t2")

    assert write_started_marker("c0ffee", store=store(double), marker=mine,
                                exclusive=True) == "written"
    assert write_started_marker("c0ffee", store=store(double), marker=theirs,
                                exclusive=True) == "taken"
    assert b"replica-a" in double.get_object(BUCKET, "out/c0ffee.started.json")
    # Without the condition the marker is simply (re)written, as the per-job mode does.
    assert write_started_marker("c0ffee", store=store(double), marker=theirs) == "written"
    assert b"replica-b" in double.get_object(BUCKET, "out/c0ffee.started.json")
