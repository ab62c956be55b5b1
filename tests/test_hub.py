"""The notification hub on its own: matching, catch-up, retiring and closing."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import anyio.to_thread
import pytest

from oscar_sd._hub import Backoff, NotificationHub, StreamAddress
from oscar_sd._storage import MinioStorage
from tests.double import ClusterDouble, escape_key

pytestmark = pytest.mark.anyio

BUCKET = "stable-diffusion"


@pytest.fixture
async def hub(cluster: ClusterDouble) -> AsyncIterator[NotificationHub]:
    storage = MinioStorage(
        cluster.minio_endpoint, cluster.minio_access_key, cluster.minio_secret_key
    )
    address = StreamAddress(storage.endpoint, BUCKET, "out/")
    hub = NotificationHub(address, storage, backoff=Backoff(0.01, 0.1), idle_timeout=60)
    yield hub
    await hub.aclose()


def line(*records: tuple[str, str]) -> bytes:
    return json.dumps(
        {"Records": [{"eventName": name, "s3": {"object": {"key": key}}} for name, key in records]}
    ).encode()


async def feed(hub: NotificationHub, raw: bytes) -> None:
    """Hand the hub one line as its reader thread would."""
    await anyio.to_thread.run_sync(hub._on_line, raw)


async def test_every_record_of_a_line_is_matched_by_exact_key(hub: NotificationHub):
    first = await hub.expect({"out/a.zip", "out/a.error.json"})
    second = await hub.expect({"out/b.zip"})
    third = await hub.expect({"out/c.zip"})
    await feed(
        hub,
        line(
            ("s3:ObjectCreated:Put", "out/a.zip"),
            ("s3:ObjectCreated:CompleteMultipartUpload", escape_key("out/b.zip")),
            ("s3:ObjectCreated:Put", "out/c.zip.partial"),  # a longer key is not a match
            ("s3:ObjectCreated:Put", "out/xc.zip"),
        ),
    )
    assert first.key == "out/a.zip"
    assert second.key == "out/b.zip"
    assert not third.resolved


async def test_only_created_events_count(hub: NotificationHub):
    waiter = await hub.expect({"out/a.zip"})
    await feed(hub, line(("s3:ObjectRemoved:Delete", "out/a.zip")))
    await feed(hub, line(("s3:ObjectAccessed:Get", "out/a.zip")))
    assert not waiter.resolved


async def test_pings_keepalives_and_garbage_are_harmless(hub: NotificationHub):
    waiter = await hub.expect({"out/a.zip"})
    for raw in (b'{"Records":null}', b"", b"   ", b"not json", b"[1, 2]"):
        await feed(hub, raw)
    assert not waiter.resolved
    assert "ignored a malformed notification line" in hub.stats.errors


async def test_a_result_already_there_is_caught_up_on_connect(
    cluster: ClusterDouble, hub: NotificationHub
):
    cluster.put_object(BUCKET, "out/early.zip", b"already here")
    assert not hub.connected
    waiter = await hub.expect({"out/early.zip", "out/early.error.json"})
    with anyio.fail_after(10):
        assert await waiter.wait() == "out/early.zip"
    assert hub.stats.caught_up == 1


async def test_batched_records_from_one_job_all_resolve(
    cluster: ClusterDouble, hub: NotificationHub
):
    def three_outputs(input_file: Path, output_dir: Path) -> None:
        for name in ("x", "y", "z"):
            (output_dir / f"{name}.zip").write_bytes(b"zip")

    cluster.batch_records = True
    cluster.add_service(
        "batch", input_path=f"{BUCKET}/batch-in", output_path=f"{BUCKET}/out", handler=three_outputs
    )
    waiters = [await hub.expect({f"out/{name}.zip"}) for name in ("x", "y", "z")]
    cluster.put_object(BUCKET, "batch-in/job.txt", b"go")
    with anyio.fail_after(10):
        keys = [await waiter.wait() for waiter in waiters]
    assert keys == ["out/x.zip", "out/y.zip", "out/z.zip"]


async def test_an_idle_hub_retires_its_stream_and_restarts_on_demand(
    cluster: ClusterDouble, hub: NotificationHub
):
    cluster.keepalive_interval = 0.05
    hub.idle_timeout = 0.0
    first = await hub.expect({"out/one.zip"})
    cluster.put_object(BUCKET, "out/one.zip", b"1")
    with anyio.fail_after(10):
        await first.wait()
    reader = hub._thread
    assert reader is not None
    hub.discard(first)  # idle now: the reader retires at its next keep-alive
    await anyio.to_thread.run_sync(reader.join, 10)
    assert not reader.is_alive()
    assert not hub.connected

    second = await hub.expect({"out/two.zip"})  # a new reader starts
    cluster.put_object(BUCKET, "out/two.zip", b"2")
    with anyio.fail_after(10):
        await second.wait()
    assert hub.stats.connects == 2


async def test_closing_joins_the_reader_even_mid_read(hub: NotificationHub):
    waiter = await hub.expect({"out/never.zip"})
    reader = hub._thread
    assert reader is not None and reader.is_alive()
    with anyio.fail_after(10):
        await hub.aclose()
    assert not reader.is_alive()
    assert not waiter.resolved


async def test_connecting_retries_with_backoff_while_storage_is_down(
    cluster: ClusterDouble, hub: NotificationHub
):
    cluster.restart_minio(downtime=0.5)  # every S3 request gets 503 for a while
    with anyio.fail_after(10):
        waiter = await hub.expect({"out/late.zip"})  # returns once a stream is open
    assert any("could not open" in error for error in hub.stats.errors)
    assert hub.connected
    cluster.put_object(BUCKET, "out/late.zip", b"late")
    with anyio.fail_after(10):
        assert await waiter.wait() == "out/late.zip"
