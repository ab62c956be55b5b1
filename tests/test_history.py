"""The history library: runs kept per identity, on disk (local) or in their own bucket.

On the cluster double: an OIDC user's history bucket is made through OSCAR's
buckets API and only that user's keys reach it; the basic-auth account's
history is one bucket shared by all its logins; the budget drops the oldest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from minio import Minio
from minio.error import S3Error

from oscar_sd import GenerationRequest, GenerationResult, OscarSD
from oscar_sd.history import DiskObjects, History, HistoryBudget, history_bucket
from oscar_sd.history._history import _READ_RECORDS
from tests.conftest import ADMIN, SERVICE
from tests.double import ClusterDouble

pytestmark = pytest.mark.anyio


def fake_result(tmp_path: Path, prompt: str, *, images: int = 2, size: int = 100,
                seed: int = 7) -> GenerationResult:
    folder = tmp_path / f"result-{prompt.replace(' ', '-')}"
    folder.mkdir()
    paths = []
    for index in range(1, images + 1):
        path = folder / f"{index}.png"
        path.write_bytes(bytes([index]) * size)
        paths.append(path)
    request = GenerationRequest(prompt=prompt, seed=seed, num_images=images)
    return GenerationResult(images=paths, request=request, job_id="j", directory=folder)


async def connect(cluster: ClusterDouble, **credentials: Any) -> OscarSD:
    return await OscarSD.connect(cluster.oscar_endpoint, service=SERVICE,
                                 connect_timeout=5.0, **credentials)


async def test_a_disk_history_survives_a_new_history_object(tmp_path: Path) -> None:
    """What a restart of the app is to the history: a new object over the same folder."""
    first = History(DiskObjects(tmp_path / "data"))
    record, dropped = await first.add(fake_result(tmp_path, "a red fox"))
    assert dropped == []
    again = History(DiskObjects(tmp_path / "data"))
    (listed,) = await again.runs()
    assert listed == record
    assert listed.prompt == "a red fox" and listed.seed == 7 and listed.images == (
        "1.png", "2.png")
    paths = await again.fetch(listed, tmp_path / "cache")
    assert [p.read_bytes() for p in paths] == [b"\x01" * 100, b"\x02" * 100]


async def test_the_budget_drops_the_oldest_runs_first(tmp_path: Path) -> None:
    history = History(DiskObjects(tmp_path / "data"), HistoryBudget(max_runs=2, max_bytes=10**6))
    made = [(await history.add(fake_result(tmp_path, f"run {n}")))[0] for n in range(3)]
    assert [r.run_id for r in await history.runs()] == [made[2].run_id, made[1].run_id]
    by_size = History(DiskObjects(tmp_path / "sized"), HistoryBudget(max_runs=50, max_bytes=500))
    first, _ = await by_size.add(fake_result(tmp_path, "big 1", size=200))
    _, dropped = await by_size.add(fake_result(tmp_path, "big 2", size=200))
    assert dropped == [first.run_id]
    assert not (tmp_path / "sized" / "runs" / first.run_id).exists()


async def test_adding_runs_lists_the_history_once_until_the_listing_is_old(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Adding a run keeps the budget by the runs this history knows, not by listing again.
    history = History(DiskObjects(tmp_path / "data"), HistoryBudget(max_runs=3, max_bytes=10**6))
    listed: list[str] = []
    real_folders = history.objects.folders
    monkeypatch.setattr(history.objects, "folders", lambda prefix: listed.append(prefix)
                        or real_folders(prefix))
    made = [(await history.add(fake_result(tmp_path, f"run {n}")))[0] for n in range(5)]
    assert listed == ["runs/"]  # the first add's look, no more
    assert [r.run_id for r in await history.runs()] == [m.run_id for m in made[:1:-1]]
    # Once the listing is older than relist_after, an add looks again (others' runs).
    history.relist_after = 0.0
    await history.add(fake_result(tmp_path, "run 5"))
    assert listed.count("runs/") == 3


async def test_a_run_whose_record_is_not_there_is_left_out_until_it_is(
        tmp_path: Path) -> None:
    """The listing names runs' folders (not every file, which minio-py parses one date at
    a time): a folder without a pack or a record (a run of the older layout still being
    written, or a delete half done) is not shown, and shows once its record is there."""
    from oscar_sd.history._record import RunRecord

    objects = DiskObjects(tmp_path / "data")
    record = RunRecord.of(fake_result(tmp_path, "older"), "0" * 19 + "2-" + "cd" * 8, 3)
    objects.put(record.key("1.png"), b"png")
    _READ_RECORDS.clear()
    history = History(objects)
    assert await history.runs() == []
    objects.put(record.key("run.json"), record.to_json())
    assert [r.prompt for r in await history.runs()] == ["older"]


async def test_a_corrupt_pack_is_skipped_and_a_long_record_is_read_whole(
        tmp_path: Path) -> None:
    import dataclasses

    history = History(DiskObjects(tmp_path / "data"))
    long_prompt = "\N{FOX FACE}" * 2000  # 24 KB as JSON: longer than the first read of a pack
    await history.add(dataclasses.replace(fake_result(tmp_path, "long"), request=(
        GenerationRequest(prompt=long_prompt, seed=7, num_images=2))))
    broken, _ = await history.add(fake_result(tmp_path, "broken"))
    history.objects.put(broken.key("run.pack"), b"not a pack at all")
    _READ_RECORDS.clear()
    other = History(DiskObjects(tmp_path / "data"))
    assert [r.prompt for r in await other.runs()] == [long_prompt]
    (record,) = await other.runs()
    assert await other.image(record, "2.png") == b"\x02" * 100


async def test_a_run_deleted_after_the_listing_is_not_shown_and_breaks_nothing(
        tmp_path: Path) -> None:
    """Another login of the account (its budget) or another browser deletes a run this
    tab has listed but not fetched yet: the tab leaves it out, and nothing fails."""
    from oscar_sd.ui.sessions import Sessions, tab_key

    store = History(DiskObjects(tmp_path / "data"))
    await store.add(fake_result(tmp_path, "stays"))
    doomed, _ = await store.add(fake_result(tmp_path, "deleted elsewhere"))
    sessions = Sessions(tmp_path / "cache", 3600)
    tab = await sessions.open(tab_key("a"), None, owns_backend=False, store=store)
    listed = {entry.prompt: entry for entry in await sessions.load_history(tab)}
    await History(DiskObjects(tmp_path / "data")).delete(doomed.run_id)  # another login
    assert not await sessions.materialise(tab, listed["deleted elsewhere"], first_only=True)
    assert await sessions.materialise(tab, listed["stays"], first_only=True)
    with pytest.raises(KeyError):
        await store.fetch(doomed, tmp_path / "elsewhere")
    await sessions.close_all()


async def test_logins_of_one_account_fetch_each_image_once_into_the_apps_cache(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fifty logins of the one basic-auth account share a history: the second login's
    page links the images the first fetched (or made) instead of fetching them again."""
    from oscar_sd.ui.sessions import Sessions, tab_key

    await History(DiskObjects(tmp_path / "data")).add(fake_result(tmp_path, "shared"))
    sessions = Sessions(tmp_path / "cache", 3600)
    fetched: list[str] = []
    logins = []
    for name in ("first", "second"):
        store = History(DiskObjects(tmp_path / "data"))
        real_get = store.objects.get
        monkeypatch.setattr(store.objects, "get", lambda key, real_get=real_get:
                            fetched.append(key) or real_get(key))
        logins.append(await sessions.open(tab_key(name), None, owns_backend=False,
                                          store=store))
    for login in logins:
        (entry,) = await sessions.load_history(login)
        assert await sessions.materialise(login, entry)
        assert [Path(image).read_bytes() for image in entry.images] == [b"\x01" * 100,
                                                                        b"\x02" * 100]
    assert [key for key in fetched if not key.endswith("run.json")] == [
        f"runs/{entry.run}/run.pack"]  # one download of the run's pack, by one login
    await sessions.close_all()


async def test_logins_of_one_account_read_each_record_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    await History(DiskObjects(tmp_path / "data")).add(fake_result(tmp_path, "once"))
    _READ_RECORDS.clear()  # as if another process (replica) had added it
    logins = [History(DiskObjects(tmp_path / "data")) for _ in range(5)]
    read: list[str] = []
    for login in logins:
        real_read = login.objects.get_range
        monkeypatch.setattr(login.objects, "get_range", lambda key, *at, real_read=real_read:
                            read.append(key) or real_read(key, *at))
    for login in logins:
        assert [r.prompt for r in await login.runs()] == ["once"]
    assert len([key for key in read if key.endswith("run.pack")]) == 1
    # The process that adds a run knows its record: its other logins read none.
    await logins[0].add(fake_result(tmp_path, "twice"))
    for login in logins:
        assert [r.prompt for r in await login.runs()] == ["twice", "once"]
    assert len([key for key in read if key.endswith("run.pack")]) == 1


async def test_a_deleted_run_is_gone_from_the_storage(tmp_path: Path) -> None:
    history = History(DiskObjects(tmp_path / "data"))
    record, _ = await history.add(fake_result(tmp_path, "to delete"))
    await history.delete(record.run_id)
    assert await history.runs() == []
    assert list((tmp_path / "data").rglob("*.png")) == []
    assert await History(DiskObjects(tmp_path / "data")).record(record.run_id) is None


async def test_a_key_cannot_leave_the_disk_history(tmp_path: Path) -> None:
    objects = DiskObjects(tmp_path / "data")
    with pytest.raises(ValueError):
        objects.put("../outside.png", b"x")
    assert await History(objects).record("../../etc") is None


async def test_an_oidc_users_history_is_a_bucket_only_they_can_read(
    oidc_cluster: ClusterDouble, tmp_path: Path,
) -> None:
    cluster = oidc_cluster
    alice = await connect(cluster, token=cluster.sign_in("alice@egi.eu")["access_token"])
    history = await alice.history()
    bucket = history_bucket("alice@egi.eu")
    # Made through OSCAR's buckets API (a user's own keys may not make buckets).
    assert cluster.oscar_requests["POST /system/buckets"] == 1
    assert cluster.bucket_owners[bucket] == "alice@egi.eu"
    record, _ = await history.add(fake_result(tmp_path, "alice's own"))

    # A second sign-in (another browser, another replica, after a restart) sees it.
    again = await connect(cluster, token=cluster.sign_in("alice@egi.eu")["access_token"])
    assert [r.prompt for r in await (await again.history()).runs()] == ["alice's own"]
    assert cluster.oscar_requests["POST /system/buckets"] == 1  # it was there already

    # Bob's keys cannot read it, nor list it; his history is another bucket.
    bob = await connect(cluster, token=cluster.sign_in("bob@egi.eu")["access_token"])
    assert await (await bob.history()).runs() == []
    access_key, secret_key = cluster.minio_keys_for("bob@egi.eu")
    bobs_client = Minio(cluster.minio_endpoint.removeprefix("http://"), access_key, secret_key,
                        secure=False)
    with pytest.raises(S3Error) as denied:
        bobs_client.get_object(bucket, record.key("1.png"))
    assert denied.value.code == "AccessDenied"
    with pytest.raises(S3Error):
        list(bobs_client.list_objects(bucket, recursive=True))


async def test_the_basic_auth_account_has_one_history_for_all_its_logins(
    cluster: ClusterDouble, tmp_path: Path,
) -> None:
    one = await (await connect(cluster, user=ADMIN[0], password=ADMIN[1],
                               keep_password=False)).history()
    assert one.shared
    with anyio.fail_after(10):
        record, _ = await one.add(fake_result(tmp_path, "everyone's"))
    two = await (await connect(cluster, user=ADMIN[0], password=ADMIN[1])).history()
    assert [r.run_id for r in await two.runs()] == [record.run_id]
    # One upload a run (its record and PNGs in one pack), read back by range.
    assert cluster.list_keys(history_bucket(None)) == [record.key("run.pack")]
    assert await two.image(record, "2.png") == b"\x02" * 100
    assert await two.image(record, "1.png") == b"\x01" * 100
    await two.delete(record.run_id)
    assert cluster.list_keys(history_bucket(None)) == []


async def test_a_shared_bucket_made_by_another_sign_in_meanwhile_is_used(
    cluster: ClusterDouble, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two logins at once both look, find no bucket, and make it: the second make is
    refused as "already exists", and that sign-in must go on with the bucket."""
    sd = await connect(cluster, user=ADMIN[0], password=ADMIN[1])
    check_bucket = sd._storage.check_bucket
    looks: list[str] = []

    def look_then_the_other_makes_it(bucket: str) -> bool:
        looks.append(bucket)
        if len(looks) == 1:
            found = check_bucket(bucket)
            cluster.make_bucket(bucket)  # the other sign-in, between our look and our make
            return found
        return check_bucket(bucket)

    monkeypatch.setattr(sd._storage, "check_bucket", look_then_the_other_makes_it)
    history = await sd.history()
    assert history.shared and await history.runs() == []
    assert looks == [history_bucket(None)] * 2  # absent, made by the other, then usable


# -- the page's sessions over a history ------------------------------------------------


async def test_local_history_survives_an_app_restart_and_is_the_machines(
    tmp_path: Path,
) -> None:
    """Without a login, every tab (and the next app process) sees the machine's runs."""
    from oscar_sd import Settings
    from oscar_sd.ui.login import local_history
    from oscar_sd.ui.sessions import Sessions, tab_key

    settings = Settings(data_dir=str(tmp_path / "data"))
    with anyio.fail_after(20):
        before = Sessions(tmp_path / "cache-1", 3600)
        tab = await before.open(tab_key("a"), None, owns_backend=False,
                                store=local_history(settings, None))
        entry = await before.keep(tab, fake_result(tmp_path, "a kept fox"))
        await before.close_all()  # the app stops: its cache goes, the history stays
        assert not (tmp_path / "cache-1").exists()

        after = Sessions(tmp_path / "cache-2", 3600)
        other_tab = await after.open(tab_key("b"), None, owns_backend=False,
                                     store=local_history(settings, None))
        (again,) = await after.load_history(other_tab)
        assert (again.run, again.prompt, again.seed) == (entry.run, "a kept fox", 7)
        assert await after.materialise(other_tab, again)
        assert [Path(p).read_bytes() for p in again.images] == [b"\x01" * 100, b"\x02" * 100]

        # A login of OSCAR_SD_USERS has a history of its own, not the machine's.
        alice = await after.open("k", None, owns_backend=False,
                                 store=local_history(settings, "alice"))
        assert await after.load_history(alice) == []

        assert await after.delete_run(other_tab, again.run)
        assert await local_history(settings, None).runs() == []


# -- share links ------------------------------------------------------------------------


async def test_a_share_link_shows_the_run_without_sign_in_and_fails_after_expiry(
    cluster: ClusterDouble, tmp_path: Path,
) -> None:
    import time

    import httpx
    from starlette.applications import Starlette

    from oscar_sd.ui.sealed import Sealer
    from oscar_sd.ui.share import DAY, Shares

    history = await (await connect(cluster, user=ADMIN[0], password=ADMIN[1],
                                   keep_password=False)).history()
    record, _ = await history.add(fake_result(tmp_path, "a shared heron"))
    other, _ = await history.add(fake_result(tmp_path, "not shared"))
    now = [time.time()]
    shares = Shares(Sealer("a secret of the tests, long enough", clock=lambda: now[0]),
                    tmp_path, 7 * DAY)
    token = await shares.token_for(history, record.run_id)
    assert token is not None and record.run_id not in token  # sealed, not readable

    # No cookie, no credentials: the link alone.
    transport = httpx.ASGITransport(app=Starlette(routes=shares.routes()))
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as browser:
        page = await browser.get(f"/share/{token}")
        assert page.status_code == 200 and "a shared heron" in page.text
        assert "not shared" not in page.text
        image = await browser.get(f"/share/{token}/1.png")
        assert image.content == b"\x01" * 100
        # Only that run's images: another run's name is not in the token.
        assert (await browser.get(f"/share/{token}/run.json")).status_code == 404
        assert (await browser.get(f"/share/{token[:-4]}abcd")).status_code == 404

        # Eight days later (the link lives seven).
        now[0] += 8 * DAY
        expired = await browser.get(f"/share/{token}")
        assert expired.status_code == 410 and "has expired" in expired.text
        assert (await browser.get(f"/share/{token}/1.png")).status_code == 410
    assert other.run_id


async def test_notes_of_runs_this_process_waits_for_are_not_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every login's read of a shared history looks for runs an earlier process left: the
    notes this process wrote for runs it still waits for are skipped by name, not read;
    a note it leaves (a cancelled run) is read again."""
    from oscar_sd.history._pending import leave_pending, note_pending, pending_runs

    history = History(DiskObjects(tmp_path / "data"))
    await note_pending(history, "waited-for", GenerationRequest(prompt="ours", seed=1))
    await note_pending(history, "cancelled", GenerationRequest(prompt="left", seed=1))
    leave_pending("cancelled")
    history.objects.put("pending/left-behind.json", history.objects.get(
        "pending/cancelled.json").replace(b"cancelled", b"left-behind"))  # another process's
    read: list[str] = []
    real_get = history.objects.get
    monkeypatch.setattr(history.objects, "get", lambda key: read.append(key) or real_get(key))
    runs = await pending_runs(history)
    assert sorted(run.job_id for run in runs) == ["cancelled", "left-behind"]
    assert sorted(read) == ["pending/cancelled.json", "pending/left-behind.json"]


async def test_notes_of_runs_ending_together_are_deleted_together(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fifty logins' runs ending at once cost a few multi-object deletes, not fifty."""
    from oscar_sd.history._pending import drop_pending, note_pending, pending_runs

    history = History(DiskObjects(tmp_path / "data"))
    jobs = [f"job-{n}" for n in range(20)]
    for job in jobs:
        await note_pending(history, job, GenerationRequest(prompt=job, seed=1))
    deletes: list[list[str]] = []
    real_remove = history.objects.remove
    monkeypatch.setattr(history.objects, "remove",
                        lambda keys: deletes.append(keys) or real_remove(keys))
    async with anyio.create_task_group() as tasks:
        for job in jobs:
            tasks.start_soon(drop_pending, history, job)
    assert await pending_runs(history) == []
    assert sorted(key for keys in deletes for key in keys) == sorted(
        f"pending/{job}.json" for job in jobs)
    assert len(deletes) <= 2  # the first alone, then every one that ended meanwhile


async def test_runs_kept_one_file_an_image_before_the_pack_are_still_read(
        tmp_path: Path) -> None:
    """Histories kept before the pack have 1.png … N.png beside a record without
    ``packed``: shown, fetched, shared and deleted as before."""
    from oscar_sd.history import read_shared, share_locations
    from oscar_sd.history._record import RunRecord

    objects = DiskObjects(tmp_path / "data")
    record = RunRecord.of(fake_result(tmp_path, "old layout"), "0" * 19 + "1-" + "ab" * 8, 6)
    assert record.packed == ()
    for index in (1, 2):
        objects.put(record.key(f"{index}.png"), bytes([index]) * 3)
    objects.put(record.key("run.json"), record.to_json())
    history = History(objects)
    (listed,) = await history.runs()
    assert listed.images == ("1.png", "2.png") and listed.packed == ()
    paths = await history.fetch(listed, tmp_path / "cache")
    assert [path.read_bytes() for path in paths] == [b"\x01" * 3, b"\x02" * 3]
    locations = await share_locations(history, listed, 60)
    assert await read_shared(locations["2.png"], tmp_path / "data") == b"\x02" * 3
    await history.delete(listed.run_id)
    assert objects.list("runs/") == []


async def test_a_packed_run_is_shared_image_by_image(tmp_path: Path) -> None:
    from oscar_sd.history import read_shared, share_locations

    history = History(DiskObjects(tmp_path / "data"))
    record, _ = await history.add(fake_result(tmp_path, "packed", images=3, size=5))
    locations = await share_locations(history, record, 60)
    assert [await read_shared(locations[name], tmp_path / "data") for name in record.images] == [
        bytes([index]) * 5 for index in (1, 2, 3)]
    with pytest.raises(KeyError):  # a location outside the data folder is refused
        await read_shared(str(tmp_path / "cache" / "x#bytes=0-5"), tmp_path / "data")
