"""The OSCAR backend end to end, through the cluster double.

Every test goes the real way: oscar-python against the double's REST API,
minio against its S3 API, and the notification hub on its listen stream.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest
from PIL import Image

from oscar_sd import (
    AuthenticationError,
    Backoff,
    ClusterUnreachableError,
    GenerationRequest,
    GenerationTimeout,
    InvalidResultError,
    JobFailedError,
    OscarSD,
    Progress,
    ServiceNotFoundError,
    Stage,
)
from oscar_sd._notify.hub import close_all_hubs
from oscar_sd._notify.reconcile import ReconcilePolicy
from tests.double import ClusterDouble, services
from tests.helpers import until

pytestmark = pytest.mark.anyio

FAST_BACKOFF = Backoff(base=0.01, cap=0.2)
SERVICE = "stable-diffusion"


@pytest.fixture(autouse=True)
def _fresh_hubs() -> Any:
    yield
    close_all_hubs()


def connect(cluster: ClusterDouble, **options: Any) -> Any:
    """Connect as the cluster's one basic-auth account, or with ``token=``."""
    options.setdefault("backoff", FAST_BACKOFF)
    options.setdefault("connect_timeout", 5.0)
    if "token" not in options:
        options["user"], options["password"] = cluster.admin
    return OscarSD.connect(cluster.oscar_endpoint, service=SERVICE, **options)


def fingerprints(paths: list[Path]) -> list[str]:
    return [services.png_fingerprint(path.read_bytes()) for path in paths]


def expected(request: GenerationRequest, count: int | None = None) -> list[str]:
    assert request.seed is not None
    return [
        services.expected_png_fingerprint(request.prompt, request.seed, index)
        for index in range(1, (count or request.num_images) + 1)
    ]


class Uploads:
    """Counts requests that reached Stage.UPLOADED: the event a fault test waits on."""

    def __init__(self, expected_count: int) -> None:
        self.expected_count = expected_count
        self.count = 0
        self.all_uploaded = anyio.Event()

    def __call__(self, progress: Progress) -> None:
        if progress.stage is Stage.UPLOADED:
            self.count += 1
            if self.count == self.expected_count:
                self.all_uploaded.set()


async def wait_for_thread_event(event: threading.Event, limit: float = 10.0) -> None:
    """Wait for a flag the double sets from its own threads, without blocking the loop."""
    with anyio.fail_after(limit):
        while not await anyio.to_thread.run_sync(event.wait, 0.05):
            pass


async def error_once_storage_breaks(
    sd: OscarSD, prompt: str, break_storage: Callable[[], None], *, limit: float,
    on_progress: Callable[[Progress], None] | None = None,
) -> BaseException:
    """Generate ``prompt``; once it is uploaded, ``break_storage``; the error it ends with."""
    uploads = Uploads(1)
    caught: list[BaseException] = []

    def progress(report: Progress) -> None:
        uploads(report)
        if on_progress is not None:
            on_progress(report)

    async def generate() -> None:
        try:
            await sd.generate(prompt, progress)
        except Exception as exc:
            caught.append(exc)

    with anyio.fail_after(limit):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(generate)
            await uploads.all_uploaded.wait()
            break_storage()
    (error,) = caught
    return error


async def reconnected(sd: OscarSD, connects_before: int) -> None:
    """Wait until the hub's stream has been opened again.

    Results may all arrive before that: reconciliation also finds what landed
    while the stream was down, so the reconnect is awaited, not assumed.
    """
    stats = sd._hub.stats
    await until(lambda: stats.connects > connects_before and sd._hub.connected, limit=30,
                what="the stream was not opened again")


async def warm_up(sd: OscarSD) -> None:
    """Complete one request, so the stream's first catch-up listing is behind us.

    Until then a result can also be found by that listing, which would hide
    whether a fault test's result came through the path the test means.
    """
    await sd.generate(GenerationRequest(prompt="warm-up", num_images=1))


def objects_left(cluster: ClusterDouble) -> list[str]:
    return cluster.list_keys("stable-diffusion")


# -- the happy path -----------------------------------------------------------


@pytest.mark.parametrize("escape_keys", [False, True], ids=["raw-keys", "escaped-keys"])
async def test_generate_end_to_end(cluster: ClusterDouble, escape_keys: bool, tmp_path: Path):
    cluster.escape_keys = escape_keys
    stages: list[Stage] = []
    async with connect(cluster, results_dir=tmp_path) as sd:
        result = await sd.generate(
            GenerationRequest(prompt="a lighthouse at dusk", seed=1234),
            on_progress=lambda progress: stages.append(progress.stage),
        )
    assert len(result.images) == 6
    assert fingerprints(result.images) == expected(result.request)
    assert result.request.seed == 1234
    assert result.directory.parent == tmp_path
    assert all(path.parent == result.directory for path in result.images)
    with Image.open(result.images[0]) as image:
        assert "a lighthouse at dusk" in image.text["parameters"]
        assert json.loads(image.text["oscar-sd"])["seed"] == 1234
    assert stages == [Stage.UPLOADED, Stage.WAITING, Stage.DOWNLOADING, Stage.DONE]
    assert result.timings.total > 0
    assert objects_left(cluster) == []  # input and output are tidied away


async def test_a_random_seed_is_drawn_and_reported(cluster: ClusterDouble):
    async with connect(cluster) as sd:
        result = await sd.generate("a red fox")
    assert result.request.seed is not None
    assert fingerprints(result.images) == expected(result.request)
    result.cleanup()
    assert not result.directory.exists()


async def test_text_input_and_the_upstream_example_service(cluster: ClusterDouble):
    cluster.add_service(
        "upstream",
        input_path="upstream/in",
        output_path="upstream/out",
        handler=services.upstream_example,
    )
    async with OscarSD.connect(
        cluster.oscar_endpoint,
        user=cluster.admin[0],
        password=cluster.admin[1],
        service="upstream",
        input_format="text",
        backoff=FAST_BACKOFF,
    ) as sd:
        result = await sd.generate(GenerationRequest(prompt="a cat", seed=9))
    # A .txt holds only the prompt, so the service used its own default seed.
    assert fingerprints(result.images) == [services.expected_png_fingerprint("a cat", 0, 1)]


async def test_keep_objects_leaves_input_and_output(cluster: ClusterDouble):
    async with connect(cluster, keep_objects=True) as sd:
        result = await sd.generate("kept")
    assert sorted(objects_left(cluster)) == [
        f"in/{result.job_id}.json",
        f"out/{result.job_id}.zip",
    ]


# -- connecting ----------------------------------------------------------------


async def test_wrong_password_is_an_authentication_error(cluster: ClusterDouble):
    with pytest.raises(AuthenticationError) as caught:
        await OscarSD.connect(cluster.oscar_endpoint, user="oscar", password="not-it")
    assert "401" in str(caught.value)
    assert "not-it" not in str(caught.value)


async def test_only_the_one_admin_account_logs_in_with_a_password(cluster: ClusterDouble):
    with pytest.raises(AuthenticationError):  # OSCAR has exactly one basic-auth account
        await OscarSD.connect(cluster.oscar_endpoint, user="alice", password="oscar-pw")


async def test_a_bearer_token_is_accepted(oidc_cluster: ClusterDouble):
    token = oidc_cluster.sign_in("carol@egi.eu")["access_token"]
    async with connect(oidc_cluster, token=token) as sd:
        result = await sd.generate(GenerationRequest(prompt="with a token", num_images=2))
    with pytest.raises(AuthenticationError):
        await connect(oidc_cluster, token="tok-mallory")
    assert len(result.images) == 2
    # /system/config gave carol her own MinIO keys, and the requests used only those.
    assert oidc_cluster.storage.access_keys_used == {"carol@egi.eu"}


async def test_unknown_service_names_the_ones_that_exist(cluster: ClusterDouble):
    with pytest.raises(ServiceNotFoundError) as caught:
        await OscarSD.connect(
            cluster.oscar_endpoint, user="oscar", password="oscar-pw", service="stable-difusion"
        )
    assert "'stable-difusion'" in str(caught.value)
    assert "stable-diffusion" in caught.value.available


async def test_unreachable_endpoint_fails_fast_and_clearly():
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with anyio.fail_after(10):  # a safety net: the point is that it does not hang
        with pytest.raises(ClusterUnreachableError, match="Cannot reach the OSCAR cluster"):
            await OscarSD.connect(f"http://127.0.0.1:{port}", user="a", password="b")


async def test_an_endpoint_that_never_answers_is_cut_off_by_connect_timeout():
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        with pytest.raises(ClusterUnreachableError, match=r"did not answer within 0\.5 s"):
            await OscarSD.connect(
                f"http://127.0.0.1:{port}", user="a", password="b", connect_timeout=0.5
            )


async def test_credentials_in_the_url_never_reach_a_message(cluster: ClusterDouble):
    endpoint = cluster.oscar_endpoint.replace("http://", "http://oscar:hunter2@")
    with pytest.raises(AuthenticationError) as caught:
        await OscarSD.connect(endpoint, user="oscar", password="wrong-secret")
    assert "hunter2" not in str(caught.value)
    assert "wrong-secret" not in str(caught.value)


# -- failures of the job ---------------------------------------------------------


async def test_an_error_object_fails_the_request_at_once(cluster: ClusterDouble):
    cluster.fail_next_job("CUDA out of memory")
    async with connect(cluster, timeout=60) as sd:
        with pytest.raises(JobFailedError, match="CUDA out of memory") as caught:
            await sd.generate("anything")
    assert caught.value.job_id
    assert objects_left(cluster) == []


async def test_the_services_own_error_report_is_passed_on(cluster: ClusterDouble):
    async with connect(cluster) as sd:
        with pytest.raises(JobFailedError, match="the prompt asked to fail"):
            await sd.generate("FAIL")


async def test_the_deadline_raises_and_deletes_the_input(cluster: ClusterDouble):
    cluster.hold_jobs()
    try:
        async with connect(cluster, timeout=2.0) as sd:  # a cold hub connects in ~0.5 s
            with pytest.raises(GenerationTimeout, match="No result"):
                await sd.generate("too slow")
        assert objects_left(cluster) == []
    finally:
        cluster.release_jobs()


@pytest.mark.parametrize(
    "entries",
    [
        {"../escape.png": b"x"},
        {"1.png": b"not a png at all"},
    ],
    ids=["zip-slip", "non-image"],
)
async def test_a_hostile_result_is_refused(
    cluster: ClusterDouble, tmp_path: Path, entries: dict[str, bytes]
):
    def hostile(input_file: Path, output_dir: Path) -> None:
        with zipfile.ZipFile(output_dir / f"{services.job_id(input_file)}.zip", "w") as zipped:
            for name, data in entries.items():
                zipped.writestr(name, data)

    cluster.add_service(
        "hostile", input_path="hostile/in", output_path="hostile/out", handler=hostile
    )
    results = tmp_path / "results"
    async with OscarSD.connect(
        cluster.oscar_endpoint,
        user=cluster.admin[0],
        password=cluster.admin[1],
        service="hostile",
        results_dir=results,
        backoff=FAST_BACKOFF,
    ) as sd:
        with pytest.raises(InvalidResultError):
            await sd.generate("x")
    assert not (tmp_path / "escape.png").exists()
    assert list(results.iterdir()) == []  # the request's directory is gone too


# -- cancellation ------------------------------------------------------------------


async def test_cancelling_cleans_up(cluster: ClusterDouble, tmp_path: Path):
    cluster.hold_jobs()
    uploads = Uploads(1)
    try:
        async with connect(cluster, results_dir=tmp_path) as sd:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(sd.generate, "cancel me", uploads)
                await uploads.all_uploaded.wait()
                tasks.cancel_scope.cancel()
            hub = sd._hub
            assert hub.pending == 0  # the waiter is gone
        assert objects_left(cluster) == []  # the input was deleted: no result came
        assert list(tmp_path.iterdir()) == []
    finally:
        cluster.release_jobs()


# -- the notification stream under faults ----------------------------------------------


async def run_all(
    clients: list[OscarSD], requests: list[GenerationRequest], fault: Callable[[], None]
) -> list[Any]:
    """Start every request, wait until all are uploaded, inject ``fault``, let the jobs go."""
    uploads = Uploads(len(requests))
    results: list[Any] = [None] * len(requests)

    async def one(index: int) -> None:
        client = clients[index % len(clients)]
        results[index] = await client.generate(requests[index], uploads)

    async with anyio.create_task_group() as tasks:
        for index in range(len(requests)):
            tasks.start_soon(one, index)
        with anyio.fail_after(60):
            await uploads.all_uploaded.wait()
        fault()
    return results


def assert_each_got_its_own(results: list[Any], requests: list[GenerationRequest]) -> None:
    for result, request in zip(results, requests, strict=True):
        assert result.request.prompt == request.prompt
        assert fingerprints(result.images) == expected(request)


async def test_a_stream_dropped_mid_wait_still_resolves_every_waiter(cluster: ClusterDouble):
    requests = [GenerationRequest(prompt=f"dropped {i}", seed=i, num_images=2) for i in range(10)]
    cluster.hold_jobs()

    def drop_then_release() -> None:
        cluster.drop_streams()
        cluster.release_jobs()

    async with connect(cluster) as sd:
        connects_before = sd._hub.stats.connects
        with anyio.fail_after(30):
            results = await run_all([sd], requests, drop_then_release)
            await reconnected(sd, connects_before)
    assert_each_got_its_own(results, requests)


async def test_a_minio_restart_with_50_jobs_in_flight(cluster: ClusterDouble):
    requests = [GenerationRequest(prompt=f"restart {i}", seed=100 + i) for i in range(50)]
    cluster.hold_jobs()

    def restart_then_release() -> None:
        cluster.restart_minio(downtime=0.3)
        cluster.release_jobs()  # results land while MinIO is "down" or reconnecting

    async with connect(cluster) as alice, connect(cluster) as bob:
        with anyio.fail_after(30):
            results = await run_all([alice, bob], requests, restart_then_release)
            assert alice._hub is bob._hub  # two logins (one storage account), one shared stream
            await reconnected(alice, 1)  # it was dropped and reconnected
    assert_each_got_its_own(results, requests)


async def test_a_stalled_stream_is_noticed_and_replaced(cluster: ClusterDouble):
    cluster.keepalive_interval = 0.1
    requests = [GenerationRequest(prompt="stalled", seed=5, num_images=1)]

    def stall_then_release() -> None:
        cluster.stall_streams()
        cluster.release_jobs()

    # Keep-alive spaces come every 0.1 s here: 2 s of silence is a stall.
    async with connect(cluster, stall_timeout=2.0) as sd:
        await warm_up(sd)
        # The warm-up's own result may be caught up by the first connect's listing (it
        # lands as fast as the listing runs): only what the reconnect caught counts.
        caught_before = sd._hub.stats.caught_up
        # Reconciliation would find the result too: keep it out of this test.
        sd._hub.reconciler.policy = ReconcilePolicy(first_check=600, max_interval=600)
        cluster.hold_jobs()
        with anyio.fail_after(20):
            results = await run_all([sd], requests, stall_then_release)
        assert any("dropped" in error for error in sd._hub.stats.errors), sd._hub.stats
        assert sd._hub.stats.connects == 2
        assert sd._hub.stats.caught_up - caught_before == 1
    assert_each_got_its_own(results, requests)


async def test_a_lost_event_is_recovered_by_the_catch_up_after_a_reconnect(
    cluster: ClusterDouble,
):
    request = GenerationRequest(prompt="lost", seed=3, num_images=1)
    async with connect(cluster, timeout=60) as sd:
        await warm_up(sd)
        # Reconciliation would find it too, within seconds: keep it out of this test.
        sd._hub.reconciler.policy = ReconcilePolicy(first_check=600, max_interval=600)
        stats = sd._hub.stats
        before = (stats.caught_up, stats.resolved_by_event, stats.reconciled)
        landed = threading.Event()
        cluster.on_object_created = lambda bucket, key, when: key.endswith(".zip") and landed.set()
        cluster.lose_next_event("out/")  # the result's event, not the input's
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tasks:
                results: list[Any] = []

                async def generate() -> None:
                    results.append(await sd.generate(request))

                tasks.start_soon(generate)
                await wait_for_thread_event(landed)
                assert not results  # its event was lost: nothing woke the request
                cluster.drop_streams()  # the next reconnect's catch-up finds the result
        after = (stats.caught_up, stats.resolved_by_event, stats.reconciled)
    assert after == (before[0] + 1, before[1], before[2])
    assert_each_got_its_own(results, [request])


async def test_a_lost_event_with_no_reconnect_is_recovered_by_reconciliation(
    cluster: ClusterDouble,
):
    request = GenerationRequest(prompt="lost too", seed=4, num_images=1)
    async with connect(cluster, timeout=600) as sd:
        await warm_up(sd)
        stats = sd._hub.stats
        before = (stats.caught_up, stats.resolved_by_event, stats.reconciled, stats.connects)
        cluster.lose_next_event("out/")
        with anyio.fail_after(15):  # within seconds, not at the 600 s deadline
            result = await sd.generate(request)
        after = (stats.caught_up, stats.resolved_by_event, stats.reconciled, stats.connects)
    assert after == (before[0], before[1], before[2] + 1, before[3])
    assert_each_got_its_own([result], [request])


async def test_results_a_slow_reader_lost_are_recovered_by_reconciliation(
    cluster: ClusterDouble,
):
    requests = [GenerationRequest(prompt=f"slow {i}", seed=i, num_images=1) for i in range(6)]
    # A reader that falls behind goes silent; a long stall limit keeps the hub from
    # replacing the stream (whose catch-up would then deliver) before reconciliation does.
    async with connect(cluster, timeout=600, stall_timeout=60) as sd:
        await warm_up(sd)
        reconciled_before = sd._hub.stats.reconciled
        cluster.hold_jobs()

        def fall_behind_then_release() -> None:
            cluster.readers_fall_behind(queue_size=1)
            cluster.release_jobs()

        with anyio.fail_after(30):
            # The reader stays behind until every request is done: only
            # reconciliation can deliver their results.
            results = await run_all([sd], requests, fall_behind_then_release)
        dropped = cluster.storage.hub.dropped_total
        cluster.readers_catch_up()
        # One event fits in the reader's queue (unread while behind); MinIO drops the rest.
        assert dropped == len(requests) - 1
        assert sd._hub.stats.reconciled - reconciled_before == len(requests)
    assert_each_got_its_own(results, requests)


async def test_a_storage_server_without_listen_still_completes_requests(
    cluster: ClusterDouble, caplog: pytest.LogCaptureFixture
):
    cluster.listen_api = "not-implemented"
    caplog.set_level(logging.WARNING, logger="oscar_sd.hub")
    requests = [GenerationRequest(prompt=f"no listen {i}", seed=i, num_images=1) for i in range(3)]
    async with connect(cluster, timeout=600) as sd:
        with anyio.fail_after(20):
            results = [await sd.generate(request) for request in requests]
        assert sd._hub.stats.reconciled + sd._hub.stats.caught_up == 3
    assert_each_got_its_own(results, requests)
    assert len([r for r in caplog.records if "listen API" in r.getMessage()]) == 1


# -- storage outages -------------------------------------------------------------------


def kill_storage(cluster: ClusterDouble) -> None:
    """MinIO's process is gone: its port refuses connections."""
    cluster._s3_server.stop()


@pytest.mark.parametrize("how", ["refused", "503"])
async def test_storage_dying_while_waiting_says_so_then_raises_unreachable(
    cluster: ClusterDouble, how: str, caplog: pytest.LogCaptureFixture
):
    messages: list[str] = []
    cluster.hold_jobs()
    try:
        async with connect(cluster, timeout=600, outage_timeout=2.0) as sd:
            error = await error_once_storage_breaks(
                sd, "into the void",
                (lambda: kill_storage(cluster)) if how == "refused"
                else (lambda: cluster.restart_minio(downtime=3600)),
                limit=15, on_progress=lambda report: messages.append(report.message),
            )
    finally:
        cluster.release_jobs()
    assert isinstance(error, ClusterUnreachableError), repr(error)
    assert "storage" in str(error)
    assert any(m.startswith("Cannot reach the cluster's storage, retrying (") for m in messages)
    # Said in words, not as urllib3's class name.
    assert "Error)" not in str(error), str(error)
    assert any(words in str(error) for words in ("refused", "in time", "dropped", "answer"))
    # urllib3's retry warning reaches the log once, not once per retried call.
    retries = [r for r in caplog.records if r.getMessage().startswith("Retrying")]
    assert len(retries) <= 1, [r.getMessage() for r in retries]


async def test_storage_dead_at_the_deadline_is_unreachable_not_a_raw_urllib3_error(
    cluster: ClusterDouble,
):
    cluster.hold_jobs()
    try:
        async with connect(cluster, timeout=1.5, outage_timeout=600) as sd:
            error = await error_once_storage_breaks(
                sd, "deadline in an outage", lambda: kill_storage(cluster), limit=10
            )
    finally:
        cluster.release_jobs()
    assert isinstance(error, ClusterUnreachableError), repr(error)
    assert "MaxRetryError" not in str(error), str(error)


async def test_cancelling_during_an_outage_returns_at_once_and_cleans_up_later(
    cluster: ClusterDouble,
):
    cluster.hold_jobs()
    uploads = Uploads(1)
    try:
        async with connect(cluster, timeout=600) as sd:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(sd.generate, "cancel me in an outage", uploads)
                with anyio.fail_after(10):
                    await uploads.all_uploaded.wait()
                cluster.restart_minio(downtime=2.0)  # every request: 503, retried by urllib3
                started = time.monotonic()
                tasks.cancel_scope.cancel()
            assert time.monotonic() - started < 1.0
            assert objects_left(cluster) != []  # the input is still there...
            with anyio.fail_after(20):  # ...until the background retry deletes it
                while objects_left(cluster):
                    await anyio.to_thread.run_sync(time.sleep, 0.05)
    finally:
        cluster.release_jobs()


async def test_a_result_that_lands_after_cancelling_is_deleted_when_it_lands(
    cluster: ClusterDouble,
):
    started, gate = threading.Event(), threading.Event()

    def gated(input_file: Path, output_dir: Path) -> None:
        started.set()
        gate.wait(20)
        services.fake_generator(input_file, output_dir)

    cluster.add_service(SERVICE, input_path=f"{SERVICE}/in", output_path=f"{SERVICE}/out",
                        handler=gated)
    landed = threading.Event()
    cluster.on_object_created = lambda bucket, key, when: key.startswith("out/") and landed.set()
    async with connect(cluster, timeout=600) as sd:
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(sd.generate, "too late")
                await wait_for_thread_event(started)  # the job runs: it will write a result
                tasks.cancel_scope.cancel()
            gate.set()
            await wait_for_thread_event(landed)
            while objects_left(cluster):  # deleted when it landed, by the hub
                await anyio.to_thread.run_sync(time.sleep, 0.05)
        assert sd._hub.stats.late_results_deleted == 1


async def test_the_storage_pool_holds_a_connection_for_every_worker_thread(
    cluster: ClusterDouble,
):
    async with connect(cluster, storage_threads=24) as sd:
        pool_size = sd._storage._client._http.connection_pool_kw["maxsize"]
        threads = sd.limits.requests.total_tokens + sd.limits.results.total_tokens
    assert threads == 48
    assert pool_size >= threads + 2  # and the hub's own two threads


# -- many users at once ----------------------------------------------------------------------


async def test_200_requests_from_20_users_each_get_their_own_images(
    oidc_cluster: ClusterDouble,
):
    cluster = oidc_cluster  # 20 OIDC users, each with their own token and MinIO keys
    users = [f"user{i}@egi.eu" for i in range(20)]
    clients = [await connect(cluster, token=cluster.sign_in(name)["access_token"])
               for name in users]
    requests = [
        GenerationRequest(prompt=f"user{i % 20} picture {i}", seed=i, num_images=2)
        for i in range(200)
    ]
    results: list[Any] = [None] * len(requests)

    async def one(index: int) -> None:
        results[index] = await clients[index % 20].generate(requests[index])

    with anyio.fail_after(120):
        async with anyio.create_task_group() as tasks:
            for index in range(len(requests)):
                tasks.start_soon(one, index)
    assert_each_got_its_own(results, requests)
    assert len({result.job_id for result in results}) == 200
    assert len({result.directory for result in results}) == 200
    assert cluster.storage.access_keys_used == set(users)  # each with their own keys
    for client in clients:
        await client.aclose()


async def test_a_broken_progress_callback_does_not_break_the_request(cluster: ClusterDouble):
    def broken(progress: Progress) -> None:
        raise RuntimeError("the progress bar fell over")

    async with connect(cluster) as sd:
        result = await sd.generate(GenerationRequest(prompt="still fine", seed=8), broken)
    assert fingerprints(result.images) == expected(result.request)
