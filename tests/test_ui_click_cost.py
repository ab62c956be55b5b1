"""What a click costs the app beyond its own work: none of Gradio's per-event waste.

Gradio does some work after every event that this app never uses, or does it
in a way that grows with the number of tabs or events. Each test here pins one
fix and fails without it. ``bench/ui.py`` measures what the fixes are worth.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from oscar_sd.ui import WebApp
from tests.conftest import ADMIN, SERVICE
from tests.double import ClusterDouble
from tests.ui_fixtures import browser_session, client, cluster_settings, running_app, wait_until

PROMPT = "a lighthouse at dusk"


@pytest.fixture
def web(cluster: ClusterDouble) -> Iterator[WebApp]:
    with running_app(cluster_settings(cluster.oscar_endpoint)) as app:
        yield app


def test_a_missing_matplotlib_is_looked_for_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # Gradio tries `import matplotlib` around every event; a failed import is not
    # remembered by Python, so each try would search sys.path again.
    from oscar_sd.ui.app import remember_missing_matplotlib

    if importlib.util.find_spec("matplotlib") is not None:
        pytest.skip("matplotlib is installed here")
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # put back as it was, afterwards
    monkeypatch.delitem(sys.modules, "matplotlib")
    searched: list[str] = []
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, *args: object) -> object:
        searched.append(name)
        return real_find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    remember_missing_matplotlib()
    assert searched == ["matplotlib"]
    assert sys.modules["matplotlib"] is None
    with pytest.raises(ImportError):
        import matplotlib  # noqa: F401
    remember_missing_matplotlib()  # already known: no second search
    assert searched == ["matplotlib"]


def test_clicks_do_not_grow_gradio_s_event_analytics(
    web: WebApp, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Gradio's queue would keep 10,000 events and sum them all up in a pandas table
    # after every event, for a monitoring page the app turns off.
    from gradio.queueing import Queue

    tables: list[int] = []
    real_get_df = Queue._get_df
    monkeypatch.setattr(
        Queue, "_get_df", staticmethod(lambda records: tables.append(len(records)) or
                                       real_get_df(records)))
    api = client(web, tmp_path, auth=ADMIN)
    for index in range(3):
        images, _, _ = api.predict(f"{PROMPT} {index}", num_images=1, api_name="/generate")
        assert len(images) == 1
    queue = web.blocks._queue
    assert tables == [], "the summary was built"
    assert len(queue.event_analytics) <= 1


def test_a_waiting_tab_hears_its_place_once_a_second_not_once_per_start(
    cluster: ClusterDouble,
) -> None:
    # Gradio's default tells every waiting tab its place each time any run starts:
    # a line of n costs n messages per start. The app sends them once a second.
    settings = cluster_settings(cluster.oscar_endpoint, concurrency=1)
    with running_app(settings) as app, browser_session(app, *ADMIN) as http:
        generate_id = next(d["id"] for d in http.get("/config").json()["dependencies"]
                           if d.get("api_name") == "generate")

        def join(tab: str) -> None:
            http.post("/gradio_api/queue/join", json={
                "data": [f"{PROMPT} {tab}", "", None, True, None, None, "512x512", 1,
                         None, 0.6, None],
                "fn_index": generate_id, "trigger_id": None, "session_hash": tab,
            }).raise_for_status()

        heard: list[tuple[float, dict]] = []

        def listen(tab: str) -> None:
            with http.stream("GET", "/gradio_api/queue/data", params={"session_hash": tab},
                             timeout=httpx.Timeout(60)) as stream:
                for line in stream.iter_lines():
                    if line.startswith("data:"):
                        message = json.loads(line.removeprefix("data:"))
                        heard.append((time.monotonic(), message))
                        if message.get("msg") in ("process_starts", "close_stream"):
                            return

        cluster.hold_jobs()
        join("first")  # runs, and its job is held on the cluster
        wait_until(lambda: len(cluster.jobs(SERVICE)) == 1, what="the first job")
        for tab in range(6):
            join(f"waiting{tab}")
        join("last")  # seventh in line: six runs start before it
        listener = threading.Thread(target=listen, args=("last",))
        listener.start()
        wait_until(lambda: any(m.get("msg") == "estimation" for _, m in heard),
                   what="the last tab's place in line")
        assert heard[0][1]["rank"] == 6
        released = time.monotonic()
        cluster.release_jobs()
        listener.join(timeout=60)
        started = next(at for at, m in heard if m.get("msg") == "process_starts")
        during = [m for at, m in heard if released <= at and m.get("msg") == "estimation"]
        # One a second while the line moves (and one more at the edge), not one per start.
        assert len(during) <= 2 + int(started - released), during


def test_the_gallery_value_is_what_gradio_s_own_models_make() -> None:
    # Written out as plain dicts (pydantic's model_dump was 6% of the app's CPU).
    from gradio.components.gallery import GalleryData, GalleryImage
    from gradio.data_classes import ImageData

    from oscar_sd.ui.gallery import gallery_value

    images = ["/r/a/1.png", ("/r/a/2.png", "second · seed 7")]
    by_gradio = GalleryData(root=[
        GalleryImage(image=ImageData(path="/r/a/1.png", orig_name="fox-7-1.png",
                                     mime_type="image/png"), caption=None),
        GalleryImage(image=ImageData(path="/r/a/2.png", orig_name="fox-7-2.png",
                                     mime_type="image/png"), caption="second · seed 7"),
    ]).model_dump()
    assert gallery_value(images, ["fox-7-1.png", "fox-7-2.png"]) == by_gradio


def test_results_and_history_skip_gradio_s_path_checks_and_still_load(
    web: WebApp, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Gradio's cache step resolved every file, and every static and allowed folder, on
    # disk for each output file: 17% of the app's CPU with the history strip's
    # thumbnails. A results gallery's URLs are named with string checks alone.
    from gradio import utils

    checked: list[object] = []
    real_is_static = utils.is_static_file
    monkeypatch.setattr(utils, "is_static_file",
                        lambda payload: checked.append(payload) or real_is_static(payload))
    with browser_session(web, *ADMIN) as http:
        api = client(web, tmp_path, auth=ADMIN)
        for index in range(2):
            images, _, _ = api.predict(f"{PROMPT} {index}", num_images=2, api_name="/generate")
            assert len(images) == 2 and all(Path(item["image"]).read_bytes()[:4] == b"\x89PNG"
                                            for item in images)
        assert http.get("/config").status_code == 200
    assert checked == [], "a result went through Gradio's path checks"
