"""No MinIO key and no OSCAR password in anything the app serves or logs.

A whole session runs in a browser (log in, a wrong password, six images, a
failed job, history, logout) while every HTML, JS and JSON response is read;
the event streams of the queue are read through plain HTTP; the logs of the
app and of everything it uses are captured at DEBUG, and stdout/stderr too.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, Route, expect, sync_playwright

from oscar_sd.ui import WebApp
from tests.conftest import ADMIN
from tests.double import ClusterDouble
from tests.test_browser import CHROMIUM, CHROMIUM_ARGS, log_in, make_six_images
from tests.ui_fixtures import browser_session, client, cluster_settings, running_app

SCANNED_TYPES = ("html", "javascript", "json", "text/", "event-stream")
#: Streams that never end on their own; their content is read through HTTP below.
STREAMS = ("/heartbeat/", "/queue/data")


def secrets_of(cluster: ClusterDouble) -> dict[str, str]:
    return {
        "MinIO access key": cluster.minio_access_key,
        "MinIO secret key": cluster.minio_secret_key,
        "password of the admin account": cluster.admin[1],
    }


def leaks(text: str, secrets: dict[str, str]) -> list[str]:
    return [name for name, value in secrets.items() if value and value in text]


class ResponseScanner:
    """Passes every request of a page through, reading the text responses on the way."""

    def __init__(self, secrets: dict[str, str]) -> None:
        self.secrets = secrets
        self.scanned: list[str] = []
        self.texts: list[str] = []
        self.found: list[str] = []

    def __call__(self, route: Route) -> None:
        if any(stream in route.request.url for stream in STREAMS):
            route.continue_()
            return
        response = route.fetch()
        content_type = response.headers.get("content-type", "")
        if any(kind in content_type for kind in SCANNED_TYPES):
            body = response.body().decode("utf-8", "replace")
            self.scanned.append(route.request.url)
            self.texts.append(body)
            self.found += [f"{name} in {route.request.url}" for name in leaks(body, self.secrets)]
        route.fulfill(response=response)


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.DEBUG):
        yield caplog


def test_no_secret_in_pages_api_or_logs(
    cluster: ClusterDouble,
    tmp_path: Path,
    logs: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    if shutil.which(CHROMIUM) is None:
        pytest.skip("Debian's chromium is not installed (make browser)")
    secrets = secrets_of(cluster)
    scanner = ResponseScanner(secrets)

    with running_app(cluster_settings(cluster.oscar_endpoint)) as app:
        assert app.url is not None
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page()
            page.route("**/*", scanner)
            browse_a_whole_session(page, app, cluster)
            browser.close()
        streamed = read_queue_streams(app, cluster)
        api_texts = read_api_answers(app, tmp_path)

    assert len(scanner.scanned) > 5, f"the scan saw the pages: {scanner.scanned}"
    # The page (its config is inline) and its scripts were read.
    assert any(url.endswith(".js") for url in scanner.scanned), scanner.scanned
    assert any("window.gradio_config" in text for text in scanner.texts)
    assert not scanner.found, scanner.found
    assert "process_completed" in streamed
    assert not leaks(streamed, secrets)
    assert not leaks(api_texts, secrets)

    logged = "\n".join(
        f"{record.name}: {record.getMessage()}"
        for record in logs.records
        if not record.name.startswith("tests.")  # the double's own log, not the app's
    )
    assert "oscar_sd.ui" in logged, "the app's log was captured"
    assert not leaks(logged, secrets)
    out, err = capfd.readouterr()
    assert not leaks(out + err, secrets)


def browse_a_whole_session(page: Page, app: WebApp, cluster: ClusterDouble) -> None:
    assert app.url is not None
    # A wrong password first: the form must not echo it anywhere.
    page.goto(app.url)
    page.get_by_label("Username").fill("oscar")
    page.get_by_label("Password").fill("bob-pw")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_text("Incorrect user name or password", exact=False)).to_be_visible()

    log_in(page, app.url, *cluster.admin)
    make_six_images(page, "a lighthouse at dusk")
    cluster.fail_next_job("CUDA out of memory")
    page.get_by_role("button", name="From Text to Image").click()
    expect(page.get_by_text("CUDA out of memory").first).to_be_visible(timeout=20_000)
    page.locator("#history img").first.click()
    page.goto(app.url + "logout")
    expect(page.get_by_label("Username")).to_be_visible()


def read_queue_streams(app: WebApp, cluster: ClusterDouble) -> str:
    """The queue's event stream of one generation, read raw."""
    with browser_session(app, *cluster.admin) as bob:
        info = bob.get("/config").json()
        generate = next(d for d in info["dependencies"] if d.get("api_name") == "generate")
        session_hash = "secretscan01"
        joined = bob.post(
            "/gradio_api/queue/join",
            json={
                "data": ["a quiet harbour", "", None, True, None, None, "512x512", 6,
                         None, 0.6, None],
                "fn_index": generate["id"],
                "trigger_id": None,
                "session_hash": session_hash,
            },
        )
        joined.raise_for_status()
        lines: list[str] = []
        with bob.stream(
            "GET", "/gradio_api/queue/data", params={"session_hash": session_hash},
            timeout=httpx.Timeout(30),
        ) as stream:
            for line in stream.iter_lines():
                lines.append(line)
                if line.startswith("data:") and _completed(line):
                    break
    return "\n".join(lines)


def _completed(line: str) -> bool:
    try:
        return json.loads(line.removeprefix("data:").strip()).get("msg") == "process_completed"
    except ValueError:
        return False


def read_api_answers(app: WebApp, downloads: Path) -> str:
    """What a gradio_client sees: the API description and a generation's result."""
    api = client(app, downloads, auth=ADMIN)
    described = json.dumps(api.view_api(print_info=False, return_format="dict"))
    result = json.dumps(api.predict("a red fox", api_name="/generate"), default=str)
    return described + result
