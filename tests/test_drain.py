"""SIGTERM lets running requests finish: the app drains (``oscar_sd/ui/drain.py``).

A run is in flight (its job held on the cluster double); the drain begins, as
``serve``'s SIGTERM handler begins it: /healthz says 503, a new run is refused
with a sentence, and the run in flight still ends with its images, in the
history; then the drain's wait returns at once. The handler itself is checked
in a real process: SIGTERM to ``oscar-sd serve`` ends it, as Ctrl-C does, once idle.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
from gradio_client import Client

from oscar_sd.ui.drain import DRAINING
from tests.conftest import ADMIN
from tests.double import ClusterDouble
from tests.ui_fixtures import cluster_settings, free_port, running_app, wait_until


def test_a_run_in_flight_finishes_while_the_app_drains(
    cluster: ClusterDouble, tmp_path: Path
) -> None:
    with running_app(cluster_settings(cluster.oscar_endpoint)) as app:
        assert app.url is not None
        first = Client(app.url, auth=ADMIN, verbose=False, download_files=str(tmp_path))
        cluster.hold_jobs()
        outcome: dict[str, object] = {}

        def run() -> None:
            outcome["result"] = first.predict("finish me", api_name="/generate")

        in_flight = threading.Thread(target=run)
        in_flight.start()
        wait_until(lambda: app.drain.running == 1, what="the run to start")
        app.drain.begin()  # what SIGTERM does

        health = httpx.get(app.url + "healthz")
        assert health.status_code == 503 and health.json()["status"] == "draining"
        second = Client(app.url, auth=ADMIN, verbose=False, download_files=str(tmp_path))
        with pytest.raises(Exception) as refused:
            second.predict("too late", api_name="/generate")
        assert DRAINING in str(refused.value)

        assert not app.drain.wait(0)  # still running
        cluster.release_jobs()
        in_flight.join(30)
        images, *_ = outcome["result"]  # type: ignore[misc]
        assert len(images) == 6
        assert app.drain.wait(5)
        # It is in the account's history, in its bucket.
        assert [k for k in cluster.list_keys("oscar-sd-history") if k.endswith("run.pack")]


def test_sigterm_stops_the_app_once_it_is_idle(cluster: ClusterDouble, tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "oscar_endpoint": cluster.oscar_endpoint, "port": str(port),
           "OSCAR_SD_HOST": "127.0.0.1", "OSCAR_SD_VERIFY_SSL": "false",
           "GRADIO_TEMP_DIR": str(tmp_path)}
    command = [str(Path(sys.executable).with_name("oscar-sd")), "serve"]
    app = subprocess.Popen(command, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        def up() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(up, timeout=120, what="the app to serve")
        app.send_signal(signal.SIGTERM)
        _, log = app.communicate(timeout=30)
        assert app.returncode == 130, log[-2000:]  # then it ends as on Ctrl-C
        assert "SIGTERM: finishing 0 run(s) in flight" in log
    finally:
        if app.poll() is None:
            app.kill()
