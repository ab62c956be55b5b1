"""The page in a real browser (Playwright + Debian's Chromium), against the cluster double.

Log in, type a prompt, press the button, see six images: at the root and
under an Ingress-style subpath. The first test saves docs/screenshot.png
(when it is missing, or with OSCAR_SD_UPDATE_SCREENSHOT=1).
"""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from PIL import Image
from playwright.sync_api import Browser, Page, expect, sync_playwright

from oscar_sd.ui import WebApp
from tests.conftest import ADMIN
from tests.double import ClusterDouble
from tests.ui_fixtures import cluster_settings, running_app

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "screenshot.png"

pytestmark = pytest.mark.skipif(
    shutil.which(CHROMIUM) is None, reason="Debian's chromium is not installed (make browser)"
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def log_in(page: Page, url: str, user: str = ADMIN[0], password: str = ADMIN[1]) -> None:
    page.goto(url)
    page.get_by_label("Username").fill(user)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("button", name="From Text to Image")).to_be_visible(timeout=20_000)


@contextmanager
def signed_in_page(browser: Browser, app: WebApp, viewport: tuple[int, int]) -> Iterator[Page]:
    """A page of ``app`` logged in with the cluster's account, closed when the block ends."""
    assert app.url is not None
    page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
    try:
        log_in(page, app.url)
        yield page
    finally:
        page.close()


def save_screenshot(page: Page) -> None:
    """docs/screenshot.png for the README, kept small: 96 colours are plenty for a UI.

    Written when missing or when OSCAR_SD_UPDATE_SCREENSHOT=1, so that a test
    run does not change a tracked file every time (the port and seed differ).
    """
    with Image.open(io.BytesIO(page.screenshot(scale="css"))) as shot:
        assert shot.size == (1000, 620)
        if SCREENSHOT.exists() and os.environ.get("OSCAR_SD_UPDATE_SCREENSHOT") != "1":
            return
        SCREENSHOT.parent.mkdir(exist_ok=True)
        shot.convert("RGB").quantize(colors=96).save(SCREENSHOT, optimize=True)


def make_six_images(page: Page, prompt: str) -> None:
    page.get_by_label("Prompt", exact=True).fill(prompt)
    page.get_by_role("button", name="From Text to Image").click()
    images = page.locator("#results img")
    expect(images).to_have_count(6, timeout=30_000)
    # Loaded, not broken: a 404 would leave an image "complete" with no width.
    page.wait_for_function(
        "() => [...document.querySelectorAll('#results img')]"
        ".every(image => image.complete && image.naturalWidth > 0)"
    )
    expect(page.locator("#status")).to_contain_text("6 images")


def test_log_in_type_a_prompt_see_six_images(browser: Browser, cluster: ClusterDouble) -> None:
    with running_app(cluster_settings(cluster.oscar_endpoint)) as app:
        with signed_in_page(browser, app, (1000, 620)) as page:
            expect(page.locator("#backend-line")).to_contain_text("OSCAR service")
            # The page says who is signed in.
            expect(page.locator("#backend-line")).to_contain_text(f"Signed in as {ADMIN[0]}")
            make_six_images(page, "a lighthouse at dusk, oil painting")
            # The images are served as the PNG files the service made.
            first = page.locator("#results img").first.get_attribute("src") or ""
            assert first.endswith(".png"), first
            save_screenshot(page)


def test_enter_submits_and_history_restores_parameters(
    browser: Browser, cluster: ClusterDouble
) -> None:
    with running_app(cluster_settings(cluster.oscar_endpoint)) as app:
        with signed_in_page(browser, app, (1100, 900)) as page:
            prompt = page.get_by_label("Prompt", exact=True)
            prompt.fill("a blue whale")
            prompt.press("Enter")
            expect(page.locator("#results img")).to_have_count(6, timeout=30_000)
            seed_used = page.get_by_label("Seed used").input_value()
            assert seed_used.isdigit()

            prompt.fill("something else")
            page.locator("#history img").first.click()
            expect(prompt).to_have_value("a blue whale")
            page.get_by_text("Advanced").click()
            expect(page.get_by_label("Seed", exact=True)).to_have_value(seed_used)
            expect(page.get_by_label("Randomize seed")).not_to_be_checked()


def test_the_same_under_a_root_path_and_log_out(browser: Browser, cluster: ClusterDouble) -> None:
    settings = cluster_settings(cluster.oscar_endpoint, root_path="/sd")
    with running_app(settings) as app:
        page = browser.new_page(viewport={"width": 1100, "height": 760})
        try:
            assert app.url is not None
            log_in(page, app.url + "sd/")
            make_six_images(page, "a red fox in the snow")
            first = page.locator("#results img").first.get_attribute("src") or ""
            assert "/sd/gradio_api/file=" in first, first

            page.get_by_text("Log out", exact=True).click()
            expect(page.get_by_label("Username")).to_be_visible(timeout=20_000)
            assert page.url.startswith(app.url + "sd"), page.url
            assert len(app.sessions) == 0, "logging out closed the session"
        finally:
            page.close()


def test_a_phone_sees_the_results_above_the_fold(
    browser: Browser, cluster: ClusterDouble
) -> None:
    with running_app(cluster_settings(cluster.oscar_endpoint)) as app:
        page = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True)
        try:
            assert app.url is not None
            log_in(page, app.url)
            # The open Advanced panel puts the results below the fold: tapping the
            # button scrolls to the progress, and to the images once they are there.
            page.get_by_text("Advanced", exact=True).click()
            assert page.locator("#results").bounding_box()["y"] > 844  # type: ignore[index]
            make_six_images(page, "a small boat")
            page.wait_for_function(
                "() => { const top = document.querySelector('#results')"
                ".getBoundingClientRect().top; return window.scrollY > 0 && top > -40 "
                "&& top < 844 / 2; }")
            first = page.locator("#results img").first.bounding_box()
            assert first is not None and 0 <= first["y"] < 844 / 2, "the first image is on screen"
            # The action buttons keep their words on one line, inside the screen.
            for action in ("#use-seed", "#copy", "#download-all a"):
                box = page.locator(action).bounding_box()
                assert box is not None and box["height"] < 40 and box["x"] + box["width"] <= 390, (
                    action, box)
            # The parameters box shows all of its text (it grows; nothing is cut off).
            page.locator("#parameters textarea").wait_for()
            clipped = page.locator("#parameters textarea").evaluate(
                "box => box.scrollHeight - box.clientHeight")
            assert clipped <= 2, clipped
        finally:
            page.close()


def test_closing_the_tab_keeps_the_logins_images_for_its_history(
    browser: Browser, cluster: ClusterDouble
) -> None:
    with running_app(cluster_settings(cluster.oscar_endpoint)) as app:
        context = browser.new_context()
        page = context.new_page()
        assert app.url is not None
        log_in(page, app.url)
        make_six_images(page, "a ship in a bottle")
        (session,) = app.sessions.of_account(ADMIN[0])
        images = list(session.directory.rglob("*.png"))
        assert len(images) == 6

        page.close()  # Gradio hears the tab go and runs the page's unload event
        # The login's next tab (same cookie) shows the run again, images and all.
        again = context.new_page()
        again.goto(app.url)
        expect(again.locator("#history img")).to_have_count(1, timeout=20_000)
        assert all(image.exists() for image in images)
        assert app.sessions.get(session.key) is session, "the login itself stays open"
        context.close()
