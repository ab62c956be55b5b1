"""Image to image and step progress as a person sees them (Chromium, local tiny model).

Saves docs/screenshot-image-to-image.png and docs/screenshot-steps.png (when
missing, or with OSCAR_SD_UPDATE_SCREENSHOT=1).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect

from tests.test_browser import browser, pytestmark  # noqa: F401
from tests.test_browser_page import advanced, fill
from tests.ui_fixtures import running_app

pytest.importorskip("diffusers", reason="the local backend needs the [local] extra")

DOCS = Path(__file__).resolve().parent.parent / "docs"


def shoot(page: object, name: str) -> None:
    shot = DOCS / name
    if not shot.exists() or os.environ.get("OSCAR_SD_UPDATE_SCREENSHOT") == "1":
        page.screenshot(path=str(shot), scale="css")  # type: ignore[attr-defined]


def test_a_start_image_is_uploaded_and_a_result_becomes_the_next_start(
    browser: Browser, tmp_path: Path  # noqa: F811
) -> None:
    from PIL import Image, ImageDraw

    from tests.test_ui_local import local_settings

    start = tmp_path / "start.png"
    picture = Image.new("RGB", (256, 256), (40, 90, 200))
    ImageDraw.Draw(picture).ellipse((60, 60, 196, 196), fill=(230, 190, 40))
    picture.save(start)
    with running_app(local_settings()) as app:
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        try:
            assert app.url is not None
            page.goto(app.url)
            page.get_by_text("Start from an image", exact=True).click()
            page.locator("#start-image input[type=file]").set_input_files(str(start))
            expect(page.locator("#start-image img")).to_be_visible(timeout=10_000)
            # The button says what a click makes now.
            expect(page.locator("#generate")).to_have_text("From Image to Image")
            advanced(page)
            fill(page, "Steps", "4")
            fill(page, "Size (width × height)", "256x256")
            page.get_by_label("Prompt", exact=True).fill("a sun over the sea, oil painting")
            page.get_by_role("button", name="From Image to Image").click()
            expect(page.locator("#results img")).to_have_count(6, timeout=120_000)
            expect(page.locator("#status")).to_contain_text("6 images")
            # The whole row of actions is on the page, "Download all (.zip)" too.
            link = page.get_by_role("link", name="Download all (.zip)").bounding_box()
            assert link is not None and link["x"] + link["width"] <= 1200, link
            shoot(page, "screenshot-image-to-image.png")

            page.get_by_role("button", name="Use this image as a start").click()
            expect(page.locator("#status")).to_contain_text("Image 1 is the start image")
            expect(page.locator("#start-image img")).to_be_visible()
        finally:
            page.close()


def test_steps_and_time_left_show_and_a_new_run_drops_the_old_cancelled(
    browser: Browser,  # noqa: F811
) -> None:
    from tests.test_ui_local import local_settings

    with running_app(local_settings()) as app:
        page = browser.new_page(viewport={"width": 1100, "height": 800})
        try:
            assert app.url is not None
            page.goto(app.url)
            advanced(page)
            fill(page, "Steps", "150")
            fill(page, "Size (width × height)", "512x512")
            page.get_by_label("Prompt", exact=True).fill("a lighthouse at dusk")
            page.get_by_role("button", name="From Text to Image").click()
            results = page.locator("#results")
            expect(results).to_contain_text(re.compile(r"step \d+ / 150 · about \d+ s left"),
                                            timeout=120_000)
            shoot(page, "screenshot-steps.png")

            page.get_by_role("button", name="Cancel").click()
            expect(page.locator("#status")).to_have_text("Cancelled")
            fill(page, "Steps", "2")
            fill(page, "Size (width × height)", "64x64")
            page.get_by_role("button", name="From Text to Image").click()
            expect(page.locator("#status")).not_to_have_text("Cancelled", timeout=2_000)
            expect(page.locator("#results img")).to_have_count(6, timeout=120_000)
            # The local line never speaks of a GPU (this machine has none).
            expect(results).not_to_contain_text("GPU")
        finally:
            page.close()
