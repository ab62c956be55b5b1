"""A request in flight when the app process died reaches its owner's history (Chromium).

The app runs as ``oscar-sd serve`` in a process of its own; a run is sent
through its API while the cluster double holds the job. The note of the run
is in the account's history; the app is killed (SIGKILL: nothing tidies up);
the job then runs and its result lands. A new app process, once the owner
logs in, shows the run in the history, and the request's objects are gone.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path

from gradio_client import Client
from playwright.sync_api import Browser, expect

from tests.conftest import ADMIN, SERVICE
from tests.double import ClusterDouble
from tests.test_browser import browser, log_in, pytestmark  # noqa: F401
from tests.ui_fixtures import app_process, cluster_settings, free_port, running_app, wait_until

HISTORY = "oscar-sd-history"


def test_a_run_in_flight_when_the_app_died_lands_in_its_history(
    browser: Browser, cluster: ClusterDouble, tmp_path: Path  # noqa: F811
) -> None:
    port = free_port()
    with app_process(cluster.oscar_endpoint, port, tmp_path / "first") as first:
        url = f"http://127.0.0.1:{port}/"
        cluster.hold_jobs()
        client = Client(url, auth=ADMIN, verbose=False, download_files=str(tmp_path))

        def send() -> None:
            try:
                client.predict("a heron that outlived its app", api_name="/generate")
            except Exception:  # the app dies under it
                pass

        threading.Thread(target=send, daemon=True).start()
        wait_until(lambda: any(k.startswith("pending/") for k in cluster.list_keys(HISTORY))
                   and cluster.list_keys(SERVICE, "in/"), what="the run noted and sent")
        first.send_signal(signal.SIGKILL)
        first.wait(10)

    cluster.release_jobs()
    wait_until(lambda: any(k.endswith(".zip") for k in cluster.list_keys(SERVICE, "out/")),
               what="the result to land")
    with running_app(cluster_settings(cluster.oscar_endpoint, adopt_after=0)) as app:
        assert app.url is not None
        page = browser.new_page()
        try:
            log_in(page, app.url)
            history = page.locator("#history")
            expect(history.locator("img")).to_have_count(1, timeout=20_000)
            expect(history).to_contain_text("a heron that outlived its app")
        finally:
            page.close()
    keys = cluster.list_keys(HISTORY)
    assert not any(k.startswith("pending/") for k in keys)
    assert any(k.endswith("run.pack") for k in keys)
    assert cluster.list_keys(SERVICE, "in/") == [] and cluster.list_keys(SERVICE, "out/") == []
