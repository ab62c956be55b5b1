"""The notification hub on its own: matching, catch-up, reconciliation, retiring, closing."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import AsyncIterator

import anyio
import anyio.to_thread
import pytest
import urllib3

from oscar_sd._notify.backoff import Backoff
from oscar_sd._notify.cleanup import Deletions
from oscar_sd._notify.hub import NotificationHub, StreamAddress, get_hub
from oscar_sd._notify.reconcile import ReconcilePolicy, Reconciler
from oscar_sd._notify.stream import on_line
from oscar_sd._storage import MinioStorage
from tests.double import ClusterDouble, escape_key
from tests.helpers import until

pytestmark = pytest.mark.anyio

BUCKET = "stable-diffusion"


def storage_for(cluster: ClusterDouble, access_key: str | None = None) -> MinioStorage:
    return MinioStorage(
        cluster.minio_endpoint, access_key or cluster.minio_access_key, cluster.minio_secret_key
    )


@pytest.fixture
async def hub(cluster: ClusterDouble) -> AsyncIterator[NotificationHub]:
    storage = storage_for(cluster)
    address = StreamAddress(storage.endpoint, BUCKET, "out/", cluster.minio_access_key)
    hub = NotificationHub(address, storage.for_hub, backoff=Backoff(0.01, 0.1), idle_timeout=60)
    yield hub
    await hub.aclose()


def line(*records: tuple[str, str]) -> bytes:
    return json.dumps(
        {"Records": [{"eventName": name, "s3": {"object": {"key": key}}} for name, key in records]}
    ).encode()


async def feed(hub: NotificationHub, raw: bytes) -> None:
    """Hand the hub one line as its reader thread would."""
    await anyio.to_thread.run_sync(on_line, hub, raw)



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
    assert first.resolved_by == second.resolved_by == "event"
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
    assert waiter.resolved_by == "catch-up"
    assert hub.stats.caught_up == 1


async def test_a_cold_hub_is_ready_after_the_first_keepalive_not_a_ping(
    cluster: ClusterDouble, hub: NotificationHub
):
    # MinIO writes nothing before its first tick; with ping=N that is N seconds,
    # without it a space after 500 ms. The hub asks for no ping, and is ready
    # as soon as the response headers came (MinIO subscribed before that).
    started = time.monotonic()
    with anyio.fail_after(5):
        await hub.expect({"out/first.zip"})
    elapsed = time.monotonic() - started
    (stream,) = cluster.storage.hub._each()
    assert stream.ping is None
    assert elapsed < 3.0  # the benchmark measures it; here only that no ping-length wait came


async def test_events_a_slow_reader_lost_are_found_by_reconciliation(
    cluster: ClusterDouble, hub: NotificationHub
):
    warm_up = await hub.expect({"out/warm-up.zip"})  # the first connect's catch-up is behind us
    cluster.put_object(BUCKET, "out/warm-up.zip", b"zip")
    with anyio.fail_after(10):
        await warm_up.wait()
    keys = [f"out/slow-{i}.zip" for i in range(5)]
    waiters = [await hub.expect({key}) for key in keys]
    cluster.readers_fall_behind(queue_size=1)  # MinIO keeps one line; the rest are dropped
    for key in keys:
        cluster.put_object(BUCKET, key, b"zip")
    assert cluster.storage.hub.dropped_total == 4
    cluster.readers_catch_up()
    with anyio.fail_after(10):  # the target: within 10 s of landing, never at a deadline
        assert [await waiter.wait() for waiter in waiters] == keys
    assert sorted(w.resolved_by or "" for w in waiters) == ["event"] + ["reconciliation"] * 4
    assert hub.stats.reconciled == 4
    assert hub.stats.reconcile_requests >= 1
    assert hub.connected  # the stream stayed healthy throughout


@pytest.mark.parametrize("api", ["not-implemented", "ignored"])
async def test_a_server_without_the_listen_api_runs_on_reconciliation_alone(
    cluster: ClusterDouble, hub: NotificationHub, api: str, caplog: pytest.LogCaptureFixture
):
    cluster.listen_api = api
    caplog.set_level(logging.WARNING, logger="oscar_sd.hub")
    with anyio.fail_after(5):
        first = await hub.expect({"out/one.zip"})
        second = await hub.expect({"out/two.zip"})
    cluster.put_object(BUCKET, "out/one.zip", b"1")
    cluster.put_object(BUCKET, "out/two.zip", b"2")
    with anyio.fail_after(10):
        assert await first.wait() == "out/one.zip"
        assert await second.wait() == "out/two.zip"
    assert first.resolved_by == second.resolved_by == "reconciliation"
    assert hub.stats.listen_unsupported
    said = [r for r in caplog.records if "listen API" in r.getMessage()]
    assert len(said) == 1  # said once, not once per request or retry
    assert cluster.listen_connections == 0


async def test_a_result_for_an_abandoned_request_is_deleted_when_it_lands(
    cluster: ClusterDouble, hub: NotificationHub
):
    waiter = await hub.expect({"out/late.zip", "out/late.error.json"})
    hub.abandon(waiter)  # its request was cancelled or timed out
    assert hub.pending == 0
    cluster.put_object(BUCKET, "out/late.zip", b"nobody wants me")
    await until(lambda: cluster.list_keys(BUCKET, "out/") == [])
    assert hub.stats.late_results_deleted == 1


async def test_a_late_result_whose_event_is_lost_is_deleted_by_reconciliation(
    cluster: ClusterDouble, hub: NotificationHub
):
    waiter = await hub.expect({"out/late.zip"})
    hub.abandon(waiter)
    cluster.lose_next_event("out/")
    cluster.put_object(BUCKET, "out/late.zip", b"nobody wants me")
    await until(lambda: cluster.list_keys(BUCKET, "out/") == [], limit=15)
    assert hub.stats.late_results_deleted == 1


async def test_revoked_keys_of_one_user_never_stall_another(cluster: ClusterDouble):
    bob_key = "bob-" + "k" * 12
    cluster.storage.extra_access_keys.add(bob_key)
    alice, bob = storage_for(cluster), storage_for(cluster, bob_key)
    options = {"backoff": Backoff(0.01, 0.1)}
    bob_hub = get_hub(StreamAddress(bob.endpoint, BUCKET, "out/", bob_key), bob, **options)
    alice_hub = get_hub(
        StreamAddress(alice.endpoint, BUCKET, "out/", cluster.minio_access_key), alice, **options
    )
    assert alice_hub is not bob_hub  # one hub per storage account
    assert bob_key not in repr(bob_hub.address)
    with anyio.fail_after(10):
        bobs = await bob_hub.expect({"out/bob.zip"})
        alices = await alice_hub.expect({"out/alice.zip"})
    cluster.storage.extra_access_keys.discard(bob_key)  # revoked mid-flight
    cluster.drop_streams()  # and every stream reconnects (a MinIO restart)
    cluster.put_object(BUCKET, "out/alice.zip", b"a")
    with anyio.fail_after(10):
        assert await alices.wait() == "out/alice.zip"
    await until(lambda: bob_hub.trouble is not None)
    assert not bobs.resolved


async def test_an_idle_hub_retires_its_threads_and_restarts_on_demand(
    cluster: ClusterDouble, hub: NotificationHub
):
    hub.idle_timeout = 0.0
    first = await hub.expect({"out/one.zip"})
    cluster.put_object(BUCKET, "out/one.zip", b"1")
    with anyio.fail_after(10):
        await first.wait()
    threads = list(hub._threads.values())
    assert len(threads) == 2
    hub.discard(first)  # idle now: each thread retires at its next keep-alive or round
    for thread in threads:
        await anyio.to_thread.run_sync(thread.join, 10)
        assert not thread.is_alive()
    assert not hub.connected

    second = await hub.expect({"out/two.zip"})  # new threads start
    cluster.put_object(BUCKET, "out/two.zip", b"2")
    with anyio.fail_after(10):
        await second.wait()
    assert hub.stats.connects == 2


async def test_closing_joins_the_threads_even_mid_read(hub: NotificationHub):
    waiter = await hub.expect({"out/never.zip"})
    threads = list(hub._threads.values())
    assert threads and all(thread.is_alive() for thread in threads)
    with anyio.fail_after(10):
        await hub.aclose()
    assert not any(thread.is_alive() for thread in threads)
    assert not waiter.resolved


async def test_connecting_retries_with_backoff_while_storage_is_down(
    cluster: ClusterDouble, hub: NotificationHub
):
    cluster.restart_minio(downtime=0.5)  # every S3 request gets 503 for a while
    with anyio.fail_after(10):
        waiter = await hub.expect({"out/late.zip"})  # returns once a stream is open
    assert any("could not open" in error for error in hub.stats.errors)
    assert hub.connected
    assert hub.trouble is None  # the outage is over, and the hub knows it
    cluster.put_object(BUCKET, "out/late.zip", b"late")
    with anyio.fail_after(10):
        assert await waiter.wait() == "out/late.zip"


def test_abandoned_keys_are_bounded_and_expire() -> None:
    from oscar_sd._notify.waiters import Waiter, WaiterRegistry

    async def main() -> None:
        registry = WaiterRegistry(abandoned_limit=3)
        for i in range(5):
            registry.abandon(Waiter({f"out/{i}.zip"}), keep_for=60)
        assert registry.abandoned == 3  # the oldest went first
        _, abandoned = registry.match(["out/0.zip", "out/4.zip"])
        assert abandoned == ["out/4.zip"]
        registry.abandon(Waiter({"out/x.zip"}), keep_for=0)
        assert registry.match(["out/x.zip"]) == ([], [])

    anyio.run(main)


def test_thread_safety_of_the_registry_under_many_threads() -> None:
    from oscar_sd._notify.waiters import Waiter, WaiterRegistry

    async def main() -> None:
        registry = WaiterRegistry()
        waiters = [Waiter({f"out/{i}.zip"}) for i in range(400)]

        def churn(part: list[Waiter]) -> None:
            for waiter in part:
                registry.add(waiter)
                registry.match([next(iter(waiter.keys))])
                registry.discard(waiter)

        threads = [threading.Thread(target=churn, args=(waiters[i::4],)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert registry.pending == 0

    anyio.run(main)


class RefusesFirstListings:
    """The hub's storage, refusing its first ``count`` listings as a restarting MinIO does."""

    def __init__(self, storage: MinioStorage, count: int) -> None:
        self.source, self.refusals = storage.for_hub, count

    def __getattr__(self, name: str) -> object:
        return getattr(self.source, name)

    def list_keys(self, bucket: str, prefix: str) -> list[str]:
        if self.refusals > 0:
            self.refusals -= 1
            raise ConnectionRefusedError("MinIO is restarting")
        return self.source.list_keys(bucket, prefix)


async def test_a_failed_reconciliation_listing_is_tried_again_soon_not_a_round_later(
    cluster: ClusterDouble,
):
    """MinIO restarting on a period locked rounds exactly a period apart onto its refusals
    (bench/restarts.py): a failed listing is retried after a short jittered backoff."""
    cluster.listen_api = "not-implemented"  # results are found by listing alone
    storage = storage_for(cluster)
    source = RefusesFirstListings(storage, count=3)
    address = StreamAddress(storage.endpoint, BUCKET, "out/", cluster.minio_access_key)
    hub = NotificationHub(address, source, idle_timeout=60,  # type: ignore[arg-type]
                          policy=ReconcilePolicy(first_check=0.0, round_interval=60.0))
    try:
        cluster.put_object(BUCKET, "out/landed.zip", b"zip")
        with anyio.fail_after(10):  # a round later would be a minute away
            waiter = await hub.expect({"out/landed.zip"})
            assert await waiter.wait() == "out/landed.zip"
        assert source.refusals == 0  # the fault happened: three listings refused...
        assert waiter.resolved_by == "reconciliation"  # ...and a quick retry found it
        assert hub.trouble is None
    finally:
        await hub.aclose()


def test_reconciliation_rounds_are_jittered_so_they_cannot_lock_onto_a_periodic_outage():
    reconciler = Reconciler(None, ReconcilePolicy(round_interval=1.0))  # type: ignore[arg-type]
    pauses = {reconciler._pause() for _ in range(50)}
    assert len(pauses) > 40 and all(0.75 <= pause <= 1.25 for pause in pauses)


def test_deletions_an_outage_stopped_go_when_storage_answers_and_never_run_out():
    """A restarting MinIO refuses the clean-up's deletes again and again: they are not
    refusals, so they never use up the attempts, and go the moment storage answers,
    not at the end of a long backoff (nothing left in the bucket seconds later)."""
    deletions = Deletions(max_attempts=2, first_retry=60.0)
    deletions.add(BUCKET, ["out/a.zip", "out/b.zip"])
    deleted: list[str] = []

    def restarting(bucket: str, keys: list[str]) -> list[str]:
        raise urllib3.exceptions.MaxRetryError(
            None, "/", urllib3.exceptions.NewConnectionError(None, "refused"))  # type: ignore[arg-type]

    def answering(bucket: str, keys: list[str]) -> list[str]:
        deleted.extend(keys)
        return []

    for _ in range(5):  # more outages than max_attempts
        deletions.run_due(restarting)
        assert len(deletions) == 1 and deletions.given_up == 0
        deletions.run_due(answering)  # not due yet: the backoff is a minute
        assert deleted == []
        deletions.storage_answers()
    deletions.run_due(answering)
    assert deleted == ["out/a.zip", "out/b.zip"] and len(deletions) == 0


def test_a_refused_deletion_still_gives_up_after_its_attempts():
    deletions = Deletions(max_attempts=2, first_retry=0.0)
    deletions.add(BUCKET, ["out/a.zip"])
    for _ in range(2):
        deletions.run_due(lambda bucket, keys: keys)  # AccessDenied for each key
        deletions.storage_answers()  # answering is no outage: nothing changes
    assert deletions.given_up == 1 and len(deletions) == 0
