"""Result files go to their owner only, by every route Gradio serves files from.

Gradio 6 serves a file named in the URL at ``/gradio_api/file=<path>`` and at
its older spelling ``/gradio_api/file/<path>`` (gradio/routes.py); both reach
the results folder, so the guard must answer both. Plain HTTP with each
user's login cookie, against the cluster double.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from fastapi.routing import APIRoute

from oscar_sd.ui import WebApp
from oscar_sd.ui.http import FILE_ROUTES
from tests.conftest import ADMIN
from tests.double import ClusterDouble
from tests.ui_fixtures import browser_session, cluster_settings, running_app, session_file_urls

#: Route spellings, each turning an absolute path into the URL that asks for it.
SPELLINGS = {
    "file=": lambda path: f"/gradio_api/file={quote(path)}",
    "file/": lambda path: f"/gradio_api/file/{quote(path)}",  # "file//tmp/...": absolute
}


@dataclass
class Served:
    app: WebApp
    alice: httpx.Client
    bob: httpx.Client
    #: Where alice's six images are, on the server.
    paths: list[str]


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    """Two logins of the cluster's one account, "alice" and "bob", each with images of their own."""
    with ClusterDouble(admin=ADMIN) as double:
        double.add_service("stable-diffusion", input_path="stable-diffusion/in",
                           output_path="stable-diffusion/out")
        with (
            running_app(cluster_settings(double.oscar_endpoint)) as app,
            browser_session(app, *ADMIN) as alice,
            browser_session(app, *ADMIN) as bob,
        ):
            urls = session_file_urls(alice, "alice's secret garden")
            session_file_urls(bob, "bob's boat")
            yield Served(app, alice, bob, [url.split("file=", 1)[1] for url in urls])


@pytest.mark.parametrize("spelling", sorted(SPELLINGS))
def test_each_spelling_serves_a_result_to_its_owner_only(
    served: Served, spelling: str
) -> None:
    app, alice, bob, paths = served.app, served.alice, served.bob, served.paths
    url_for = SPELLINGS[spelling]
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
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    # "/gradio_api/file/tmp/x" names "tmp/x", which Gradio resolves from its working folder.
    monkeypatch.chdir("/")
    relative = f"/gradio_api/file/{quote(served.paths[0].lstrip('/'))}"
    assert served.bob.get(relative).status_code == 404
    assert served.alice.get(relative).status_code == 200


def test_the_guard_knows_every_route_that_serves_a_file_by_its_path(
    served: Served,
) -> None:
    # Gradio's file handler is `file` (file=) and `file_deprecated` (file/), both calling
    # route_utils.file_fetch: should an upgrade add a spelling, this fails until it is guarded.
    file_routes = {route.path.split("{", 1)[0]
                   for route in api_routes(served.app.blocks.server_app)
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
    served: Served,
) -> None:
    up = "..%2F" * 12  # out of Gradio's own folders, down to alice's image
    for route in ("/static/", "/assets/", "/gradio_api/proxy="):
        answer = served.alice.get(f"{route}{up}{quote(served.paths[0].lstrip('/'))}")
        assert answer.status_code != 200 or answer.content[:4] != b"\x89PNG", route


def test_results_are_handed_to_gradio_without_cache_bookkeeping(served: Served) -> None:
    # Gradio checks each returned file against its cache on disk and records it in the
    # component's temp_files (a set that only grows); the results need neither.
    (gallery,) = [block for block in served.app.blocks.blocks.values()
                  if getattr(block, "elem_id", None) == "results"]
    recorded = [path for path in gallery.temp_files
                if Path(path).is_relative_to(served.app.sessions.root)]
    assert recorded == []
    assert all(Path(path).exists() for path in served.paths)


def test_a_runs_zip_goes_to_its_owner_only(served: Served) -> None:
    run = Path(served.paths[0]).parent.name
    mine = served.alice.get(f"/download/{run}.zip")
    assert mine.status_code == 200
    assert mine.headers["content-type"] == "application/zip"
    assert "attachment" in mine.headers["content-disposition"]
    (_, entry) = served.app.sessions.run_of(run) or (None, None)
    assert entry is not None
    # Named for people: the prompt's start, each image's own seed, its place in the run.
    slug = "alice-s-secret-garden"
    assert f'filename="{slug}-{entry.seed}.zip"' in mine.headers["content-disposition"]
    with zipfile.ZipFile(io.BytesIO(mine.content)) as archive:
        assert archive.namelist() == [f"{slug}-{entry.seed + i - 1}-{i}.png" for i in range(1, 7)]
        for i, name in enumerate(archive.namelist(), start=1):
            assert archive.read(name) == (Path(served.paths[0]).parent / f"{i}.png").read_bytes()
    assert served.bob.get(f"/download/{run}.zip").status_code == 404
    with httpx.Client(base_url=served.app.url or "") as anonymous:
        assert anonymous.get(f"/download/{run}.zip").status_code == 404
    assert served.alice.get("/download/no-such-run.zip").status_code == 404


def test_download_names_carry_the_prompt_the_seed_and_the_index() -> None:
    from oscar_sd.ui.downloads import download_name

    assert download_name("A red fox, in the SNOW!", 42, 3) == "a-red-fox-in-the-snow-42-3.png"
    assert download_name("a red fox", 42) == "a-red-fox-42.zip"
    # Other scripts stay; bidi controls and path separators do not.
    assert download_name("日本の 狐", 7, 1) == "日本の-狐-7-1.png"
    assert download_name("evil\u202e/../gnp.exe", 1, 1) == "evil-gnp-exe-1-1.png"
    assert download_name("!!!", None, 2) == "image-2.png"
    assert len(download_name("x" * 500, 1, 1)) == len("x" * 40 + "-1-1.png")
