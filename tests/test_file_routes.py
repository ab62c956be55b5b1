"""Result files go to their owner only, by every route Gradio serves files from.

Gradio 6 serves a file named in the URL at ``/gradio_api/file=<path>`` and at
its older spelling ``/gradio_api/file/<path>`` (gradio/routes.py); both reach
the results folder, so the guard must answer both. Plain HTTP with each
user's login cookie, against the cluster double.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from fastapi.routing import APIRoute
from gradio_client import Client

from oscar_sd.ui import WebApp
from oscar_sd.ui.http import FILE_ROUTES
from tests.double import ClusterDouble
from tests.ui_fixtures import browser_session, cluster_settings, running_app

#: Route spellings, each turning an absolute path into the URL that asks for it.
SPELLINGS = {
    "file=": lambda path: f"/gradio_api/file={quote(path)}",
    "file/": lambda path: f"/gradio_api/file/{quote(path)}",  # "file//tmp/...": absolute
}


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[WebApp, list[str]]]:
    """The app, with six images of alice's on disk (and a session for bob with his own)."""
    with ClusterDouble(users={"alice": "alice-pw", "bob": "bob-pw"}) as double:
        double.add_service("stable-diffusion", input_path="stable-diffusion/in",
                           output_path="stable-diffusion/out")
        with running_app(cluster_settings(double.oscar_endpoint)) as app:
            alices = result_paths(app, "alice", "alice-pw", "alice's secret garden")
            result_paths(app, "bob", "bob-pw", "bob's boat")
            yield app, alices


def result_paths(app: WebApp, user: str, password: str, prompt: str) -> list[str]:
    """Generate as ``user`` without downloading; the paths on the server of the images."""
    assert app.url is not None
    api = Client(app.url, auth=(user, password), verbose=False, download_files=False)
    images, _, _ = api.predict(prompt, api_name="/generate")
    return [image["image"]["url"].split("file=", 1)[1] for image in images]


@pytest.mark.parametrize("spelling", sorted(SPELLINGS))
def test_each_spelling_serves_a_result_to_its_owner_only(
    served: tuple[WebApp, list[str]], spelling: str
) -> None:
    app, paths = served
    url_for = SPELLINGS[spelling]
    with (
        browser_session(app, "alice", "alice-pw") as alice,
        browser_session(app, "bob", "bob-pw") as bob,
    ):
        for path in paths:
            mine = alice.get(url_for(path))
            assert mine.status_code == 200
            assert mine.headers["content-type"] == "image/png"
            assert bob.get(url_for(path)).status_code == 404
        # Nor the folder, nor a walk out of it and back in.
        folder = str(Path(paths[0]).parent)
        assert bob.get(url_for(folder)).status_code in (403, 404)
        walk = f"{folder}/../{Path(folder).name}/{Path(paths[0]).name}"
        assert bob.get(url_for(walk)).status_code == 404
        assert alice.get(url_for(walk)).status_code == 200
    with httpx.Client(base_url=app.url or "") as anonymous:
        assert anonymous.get(url_for(paths[0])).status_code in (401, 403, 404)


def test_the_older_spelling_with_a_path_relative_to_the_working_folder(
    served: tuple[WebApp, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # "/gradio_api/file/tmp/x" names "tmp/x", which Gradio resolves from its working folder.
    app, paths = served
    monkeypatch.chdir("/")
    relative = f"/gradio_api/file/{quote(paths[0].lstrip('/'))}"
    with (
        browser_session(app, "alice", "alice-pw") as alice,
        browser_session(app, "bob", "bob-pw") as bob,
    ):
        assert bob.get(relative).status_code == 404
        assert alice.get(relative).status_code == 200


def test_the_guard_knows_every_route_that_serves_a_file_by_its_path(
    served: tuple[WebApp, list[str]],
) -> None:
    # Gradio's file handler is `file` (file=) and `file_deprecated` (file/), both calling
    # route_utils.file_fetch: should an upgrade add a spelling, this fails until it is guarded.
    app, _ = served
    file_routes = {route.path.split("{", 1)[0] for route in api_routes(app.blocks.server_app)
                   if route.endpoint.__name__ in ("file", "file_deprecated")}
    assert file_routes == set(FILE_ROUTES)


def api_routes(router: object) -> Iterator[APIRoute]:
    """Every APIRoute of an app, including those of routers it includes (Gradio's API)."""
    for route in getattr(router, "routes", []):
        if isinstance(route, APIRoute):
            yield route
        else:  # an included router (FastAPI keeps the original) or a mount
            yield from api_routes(getattr(route, "original_router", route))


def test_other_file_serving_routes_do_not_reach_the_results(
    served: tuple[WebApp, list[str]],
) -> None:
    app, paths = served
    up = "..%2F" * 12  # out of Gradio's own folders, down to alice's image
    with browser_session(app, "alice", "alice-pw") as alice:
        for route in ("/static/", "/assets/", "/gradio_api/proxy="):
            answer = alice.get(f"{route}{up}{quote(paths[0].lstrip('/'))}")
            assert answer.status_code != 200 or answer.content[:4] != b"\x89PNG", route
