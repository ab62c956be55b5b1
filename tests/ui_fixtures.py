"""Helpers for the web UI tests: launch the app on loopback, log in, read PNGs.

The app runs in Gradio's server thread (``prevent_thread_lock=True``) on a
free port of 127.0.0.1; the tests talk to it over HTTP like any client.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from gradio_client import Client
from PIL import Image

from oscar_sd import Settings
from oscar_sd.ui import WebApp, build_app


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def running_app(settings: Settings, **options: Any) -> Iterator[WebApp]:
    """The app serving on a free loopback port until the block ends."""
    app = build_app(settings, **options)
    app.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True)
    try:
        yield app
    finally:
        app.close()


@contextmanager
def app_process(endpoint: str, port: int, temp: Path, **variables: str
                ) -> Iterator[subprocess.Popen[bytes]]:
    """``oscar-sd serve`` in a process of its own, as a pod runs it, against the cluster at
    ``endpoint`` on loopback ``port`` (``variables``: more of its environment), until the
    block ends or the test kills it."""
    env = {**os.environ, "oscar_endpoint": endpoint, "port": str(port),
           "OSCAR_SD_HOST": "127.0.0.1", "OSCAR_SD_VERIFY_SSL": "false",
           "GRADIO_TEMP_DIR": str(temp), **variables}
    process = subprocess.Popen([str(Path(sys.executable).with_name("oscar-sd")), "serve"],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def serving() -> bool:
        assert process.poll() is None, f"the app process ended ({process.returncode})"
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(serving, timeout=120, what="the app process to serve")
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def cluster_settings(endpoint: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "oscar_endpoint": endpoint,
        "host": "127.0.0.1",
        "concurrency": 64,
        "timeout": 30.0,
        "verify_ssl": False,
    }
    values.update(overrides)
    return Settings(**values)


def client(app: WebApp, downloads: Path, auth: tuple[str, str] | None = None) -> Client:
    """A gradio_client for the app, logged in as ``auth``; it saves images under ``downloads``."""
    assert app.url is not None
    return Client(app.url, auth=auth, verbose=False, download_files=str(downloads))


@contextmanager
def browser_session(app: WebApp, user: str, password: str) -> Iterator[httpx.Client]:
    """An HTTP client holding ``user``'s login cookie, as a browser would."""
    assert app.url is not None
    with httpx.Client(base_url=app.url, timeout=10) as http:
        response = http.post("/login", data={"username": user, "password": password})
        response.raise_for_status()
        yield http


def session_file_urls(http: httpx.Client, prompt: str) -> list[str]:
    """Generate through a logged-in HTTP client (tab "a"); the server URLs of the images."""
    info = http.get("/config").json()
    generate_id = next(d["id"] for d in info["dependencies"] if d.get("api_name") == "generate")
    http.post("/gradio_api/queue/join", json={
        "data": [prompt, "", None, True, None, None, "512x512", 6, None, 0.6, None],
        "fn_index": generate_id, "trigger_id": None, "session_hash": "a",
    }).raise_for_status()
    with http.stream("GET", "/gradio_api/queue/data", params={"session_hash": "a"},
                     timeout=httpx.Timeout(30)) as stream:
        for line in stream.iter_lines():
            if not line.startswith("data:"):
                continue
            message = json.loads(line.removeprefix("data:"))
            if message.get("msg") == "process_completed":
                images = message["output"]["data"][0]
                return [image["image"]["url"] for image in images]
    raise AssertionError("no result")


def png_metadata(path: str | Path) -> tuple[str, dict[str, Any]]:
    """The A1111 ``parameters`` chunk and the ``oscar-sd`` JSON chunk of a PNG."""
    with Image.open(path) as image:
        assert image.format == "PNG", f"{path} is {image.format}, not PNG"
        text = dict(image.text)  # type: ignore[attr-defined]
    return text["parameters"], json.loads(text["oscar-sd"])


def wait_until(condition: Callable[[], bool], timeout: float = 20.0, what: str = "") -> None:
    """Wait for ``condition`` to hold (checked every 20 ms), or fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        time.sleep(0.02)
