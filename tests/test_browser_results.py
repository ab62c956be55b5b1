"""What a person does with a run's images (Chromium): use an image's seed, copy its
parameters, download it, download all as a zip; and the login's history, which
survives a reload of the tab and is not seen by another login of the same account.
"""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.conftest import ADMIN
from tests.double import ClusterDouble
from tests.test_browser import browser, log_in, make_six_images, pytestmark  # noqa: F401
from tests.ui_fixtures import cluster_settings, png_metadata, running_app, wait_until


def pick(page: Page, index: int) -> None:
    """Click image ``index`` of the results (it opens in the gallery's preview)."""
    count = page.locator("#results img").count() or 6
    thumbnail = f"Thumbnail {index + 1} of {count}"
    page.locator("#results").get_by_role("button", name=thumbnail).first.click()


def test_use_an_images_seed_and_copy_its_parameters(
    browser: Browser, cluster: ClusterDouble  # noqa: F811
) -> None:
    with running_app(cluster_settings(cluster.oscar_endpoint)) as app:
        context = browser.new_context(viewport={"width": 1100, "height": 900})
        context.grant_permissions(["clipboard-read", "clipboard-write"])
        page = context.new_page()
        try:
            assert app.url is not None
            log_in(page, app.url)
            make_six_images(page, "a lighthouse at dusk")
            batch_seed = int(page.get_by_label("Seed used").input_value())
            (session,) = app.sessions.of_account(ADMIN[0])
            (entry,) = session.history

            pick(page, 3)
            parameters, _ = png_metadata(entry.images[3])
            expect(page.locator("#parameters textarea")).to_have_value(parameters)
            page.get_by_role("button", name="Use this image's seed").click()
            page.get_by_text("Advanced", exact=True).click()
            # Image 4 of a batch with seed S was made from seed S + 3 (the service's rule).
            expect(page.get_by_label("Seed", exact=True)).to_have_value(str(batch_seed + 3))
            expect(page.get_by_label("Randomize seed")).not_to_be_checked()

            page.get_by_role("button", name="Copy parameters").click()
            expect(page.locator("#status")).to_contain_text("Parameters copied")
            assert page.evaluate("navigator.clipboard.readText()") == parameters
        finally:
            context.close()


def test_download_one_image_and_all_as_a_zip(
    browser: Browser, cluster: ClusterDouble, tmp_path: Path  # noqa: F811
) -> None:
    with running_app(cluster_settings(cluster.oscar_endpoint)) as app:
        page = browser.new_page(viewport={"width": 1100, "height": 900}, accept_downloads=True)
        try:
            assert app.url is not None
            log_in(page, app.url)
            make_six_images(page, "a red fox in the snow")
            (session,) = app.sessions.of_account(ADMIN[0])
            (entry,) = session.history

            pick(page, 1)
            with page.expect_download() as one:
                page.locator("#results").get_by_label("Download").click()
            # Named for the run and the image: downloads of two runs never collide.
            slug = "a-red-fox-in-the-snow"
            assert one.value.suggested_filename == f"{slug}-{entry.seed + 1}-2.png"
            saved = tmp_path / "one.png"
            one.value.save_as(saved)
            # The original file, its parameters inside.
            assert saved.read_bytes() == Path(entry.images[1]).read_bytes()
            parameters, _ = png_metadata(saved)
            assert parameters.startswith("a red fox in the snow")

            with page.expect_download() as everything:
                page.get_by_text("Download all (.zip)").click()
            assert everything.value.suggested_filename == f"{slug}-{entry.seed}.zip"
            archive = tmp_path / "all.zip"
            everything.value.save_as(archive)
            with zipfile.ZipFile(archive) as zipped:
                assert zipped.namelist() == [
                    f"{slug}-{entry.seed + i}-{i + 1}.png" for i in range(6)]
                for i, name in enumerate(zipped.namelist()):
                    data = zipped.read(name)
                    assert data == Path(entry.images[i]).read_bytes()
                    assert png_metadata(io.BytesIO(data))[0].startswith("a red fox")  # type: ignore[arg-type]
        finally:
            page.close()


def test_history_survives_a_reload_an_app_restart_and_another_browser_and_deletes(
    browser: Browser, cluster: ClusterDouble  # noqa: F811
) -> None:
    first = browser.new_context(viewport={"width": 1100, "height": 900})
    second = browser.new_context(viewport={"width": 1100, "height": 900})
    try:
        with running_app(cluster_settings(cluster.oscar_endpoint)) as app:
            assert app.url is not None
            page = first.new_page()
            log_in(page, app.url)
            make_six_images(page, "a blue whale under the ice")
            make_six_images(page, "a green parrot")
            history = page.locator("#history")
            expect(history.locator("img")).to_have_count(2)
            # Basic auth is the cluster's one account: the page says whose history it is.
            expect(page.get_by_text("shared by everyone who logs in")).to_be_visible()

            page.reload()
            expect(page.get_by_role("button", name="From Text to Image")).to_be_visible()
            expect(history.locator("img")).to_have_count(2, timeout=10_000)
            seed = app.sessions.of_account(ADMIN[0])[0].history[0].seed
            expect(history).to_contain_text(f"a green parrot · seed {seed}")
            expect(history).to_contain_text("a blue whale under the ice · seed")
        # The app restarted (nothing of the history is kept in the app itself);
        # another browser logs in to the new one.
        with running_app(cluster_settings(cluster.oscar_endpoint)) as app:
            assert app.url is not None
            other = second.new_page()
            log_in(other, app.url)
            history = other.locator("#history")
            expect(history.locator("img")).to_have_count(2, timeout=10_000)
            # A thumbnail restores its run, its images fetched from the storage.
            history.locator("img").nth(1).click()
            expect(other.get_by_label("Prompt", exact=True)).to_have_value(
                "a blue whale under the ice"
            )
            expect(other.locator("#results img")).to_have_count(6)
            whale = app.sessions.of_account(ADMIN[0])[0].history[1].run
            assert any(whale in key for key in cluster.list_keys("oscar-sd-history"))

            # Share: the link opens in a browser that never signed in, with that run only.
            other.get_by_role("button", name="Share", exact=True).click()
            link = other.locator("#share-link textarea, #share-link input").first
            expect(link).to_have_value(re.compile(r"/share/"))
            stranger = browser.new_context()
            try:
                shared = stranger.new_page()
                shared.goto(link.input_value())
                expect(shared.locator("h1")).to_have_text("a blue whale under the ice")
                expect(shared.locator("img")).to_have_count(6)
                assert shared.evaluate(
                    "[...document.images].every(i => i.complete && i.naturalWidth > 0)")
            finally:
                stranger.close()

            other.get_by_role("button", name="Delete this run").click()
            expect(other.locator("#status")).to_contain_text("Run deleted")
            expect(history.locator("img")).to_have_count(1)
            assert not any(whale in key for key in cluster.list_keys("oscar-sd-history"))
    finally:
        first.close()
        second.close()


def test_runs_reach_the_strip_without_listing_the_history_after_every_click(
    browser: Browser, cluster: ClusterDouble, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    """A page load reads the history from its bucket; the strip after a run shows the
    session's history, which has the run already. Listed after every click, a full
    history (100 runs, 700 objects) and fifty logins of one account made each click
    cost seconds (bench/ui.py)."""
    from oscar_sd.history import History

    listings: list[int] = []
    real_runs = History.runs

    async def counted_runs(self: History) -> list:  # type: ignore[type-arg]
        listings.append(1)
        return await real_runs(self)

    monkeypatch.setattr(History, "runs", counted_runs)
    with running_app(cluster_settings(cluster.oscar_endpoint)) as app:
        assert app.url is not None
        page = browser.new_page()
        try:
            log_in(page, app.url)
            wait_until(lambda: len(listings) == 1, what="the page load to read the history")
            read_at_load = len(listings)
            for n in range(3):
                make_six_images(page, f"run {n}")
                expect(page.locator("#history img")).to_have_count(n + 1)
            assert len(listings) == read_at_load  # no listing after a click
            page.reload()  # a load reads it again (another browser's runs come in)
            expect(page.locator("#history img")).to_have_count(3)
            assert len(listings) > read_at_load
        finally:
            page.close()
