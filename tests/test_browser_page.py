"""What a person sees while waiting, when something fails, and on Cancel (Chromium).

The cluster double's service waits a few seconds per job here, so the stage
text has time to be seen; the local tests use the tiny model with large
images so that one denoising step takes seconds, as a real model's does.
docs/screenshot-progress.png is saved while a cluster job waits (when it is
missing, or with OSCAR_SD_UPDATE_SCREENSHOT=1).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from oscar_sd.ui import WebApp
from tests.conftest import ADMIN, SERVICE
from tests.double import ClusterDouble, services
from tests.test_browser import browser, log_in, make_six_images, pytestmark, signed_in_page  # noqa: F401
from tests.ui_fixtures import cluster_settings, running_app, wait_until

PROGRESS_SHOT = Path(__file__).resolve().parent.parent / "docs" / "screenshot-progress.png"


@pytest.fixture
def slow_app() -> Iterator[WebApp]:
    """The app on a cluster whose jobs take 3 s each."""
    with ClusterDouble(admin=ADMIN) as double:
        double.add_service(SERVICE, input_path=f"{SERVICE}/in", output_path=f"{SERVICE}/out",
                           handler=services.fake_generator, job_delay=3.0)
        with running_app(cluster_settings(double.oscar_endpoint)) as app:
            yield app


def advanced(page: Page) -> None:
    page.get_by_text("Advanced", exact=True).click()


def fill(page: Page, label: str, value: str) -> None:
    """Type ``value`` into a field, and see that it holds it.

    Gradio mounts an accordion's fields when it is first opened; a value typed
    in that instant can be dropped by the mount (a person cannot type that
    fast). Such a field is filled again, at most three times.
    """
    field = page.get_by_label(label, exact=True)
    for attempt in range(3):
        field.fill(value)
        try:
            expect(field).to_have_value(value, timeout=1_000)
            return
        except AssertionError:
            if attempt == 2:
                raise


def test_the_stage_is_written_while_a_cluster_job_waits(
    browser: Browser, slow_app: WebApp  # noqa: F811
) -> None:
    with signed_in_page(browser, slow_app, (1000, 620)) as page:
        page.get_by_label("Prompt", exact=True).fill("a lighthouse at dusk, oil painting")
        page.get_by_role("button", name="From Text to Image").click()
        overlay = page.locator("#results")
        expect(overlay).to_contain_text("Waiting for a GPU", timeout=10_000)
        expect(overlay).to_contain_text("2/4 stages")
        if not PROGRESS_SHOT.exists() or os.environ.get("OSCAR_SD_UPDATE_SCREENSHOT") == "1":
            page.screenshot(path=str(PROGRESS_SHOT), scale="css")
        expect(page.locator("#results img")).to_have_count(6, timeout=30_000)


#: Keeps every text Gradio's screen-reader status is given (it clears it again soon).
RECORD_ANNOUNCEMENTS = """() => {
  window.announced = [];
  new MutationObserver(() => {
    for (const status of document.querySelectorAll('.sr-only[role="status"]')) {
      if (status.textContent) window.announced.push(status.textContent);
    }
  }).observe(document.body, {subtree: true, childList: true, characterData: true});
}"""


def test_the_buttons_the_keys_and_the_announcer_follow_the_run(
    browser: Browser, slow_app: WebApp  # noqa: F811
) -> None:
    with signed_in_page(browser, slow_app, (1100, 900)) as page:
        generate, cancel = page.locator("#generate"), page.locator("#cancel")
        expect(cancel).to_be_disabled()
        # The primary button's keyboard focus is a clear ring.
        prompt = page.get_by_label("Prompt", exact=True)
        prompt.focus()
        for _ in range(3):
            page.keyboard.press("Tab")
            if page.evaluate("document.activeElement.id") == "generate":
                break
        ring = generate.evaluate("b => [getComputedStyle(b).outlineStyle, "
                                 "getComputedStyle(b).outlineWidth]")
        assert ring == ["solid", "3px"], ring
        page.evaluate(RECORD_ANNOUNCEMENTS)

        # Ctrl+Enter makes the images from any field; while they are made the button is
        # disabled (a second click is not silently dropped) and Cancel is on.
        # U+202E would turn what follows right to left, the seed included.
        prompt.fill("a lighthouse \u202eby keyboard")
        advanced(page)
        fill(page, "Negative prompt", "fog")
        page.get_by_label("Negative prompt").press("Control+Enter")
        expect(page.locator("#results")).to_contain_text("Waiting for a GPU", timeout=10_000)
        expect(generate).to_be_disabled()
        expect(cancel).to_be_enabled()
        # Escape cancels.
        page.keyboard.press("Escape")
        expect(page.locator("#status")).to_have_text("Cancelled")
        expect(generate).to_be_enabled()
        (session,) = slow_app.sessions.of_account(ADMIN[0])
        wait_until(lambda: not session.busy, what="the server ended the cancelled run")

        # Enter in Steps makes them too; once they are there, Cancel is off again.
        fill(page, "Steps", "2")
        page.get_by_label("Steps").press("Enter")
        expect(page.locator("#results img")).to_have_count(6, timeout=30_000)
        expect(cancel).to_be_disabled()
        expect(generate).to_be_enabled()
        page.wait_for_function("window.announced.includes('Done')", timeout=5_000)
        announced = sorted(set(page.evaluate("window.announced")))
        assert not [said for said in announced if "common." in said], announced

        # The prompt is shown with the control neutralised, in the history's caption and
        # the parameters box; the strip is as tall as its thumbnail, its caption whole.
        history = page.locator("#history")
        expect(history).to_contain_text("a lighthouse <U+202E>by keyboard · seed")
        assert "\u202e" not in (history.text_content() or "")
        expect(page.locator("#parameters textarea")).to_have_value(
            re.compile(r"^a lighthouse <U\+202E>by keyboard\nNegative prompt: fog\n"))
        thumbnail = history.locator(".thumbnail-item").first.bounding_box()
        strip = history.bounding_box()
        assert thumbnail and strip and strip["height"] < thumbnail["height"] + 60, (
            thumbnail, strip)
        caption = history.locator(".caption-label").first
        assert caption.evaluate("c => c.scrollWidth <= c.clientWidth")
        assert "…" not in (caption.text_content() or "")


def test_the_status_line_shows_the_last_error_with_the_fields_name(
    browser: Browser, cluster: ClusterDouble  # noqa: F811
) -> None:
    with running_app(cluster_settings(cluster.oscar_endpoint)) as app:
        with signed_in_page(browser, app, (1100, 900)) as page:
            advanced(page)
            # A typed seed is the seed used: typing it unticks "Randomize seed" (A1111).
            randomize = page.get_by_label("Randomize seed")
            expect(randomize).to_be_checked()
            page.get_by_label("Seed", exact=True).press_sequentially("42")
            expect(randomize).not_to_be_checked()
            make_six_images(page, "a red fox")
            expect(page.get_by_label("Seed used")).to_have_value("42")
            steps = page.get_by_label("Steps")
            steps.fill("200")
            expect(steps).to_have_value("200")
            page.get_by_role("button", name="From Text to Image").click()
            status = page.locator("#status")
            expect(status).to_contain_text("Steps must be between 1 and 150")
            expect(status).not_to_contain_text("6 images")
            # The last run's images and seed are not left beside the error.
            expect(page.locator("#results img")).to_have_count(0)
            expect(page.get_by_label("Seed used")).to_be_hidden()
            expect(page.locator("#image-actions")).to_be_hidden()

            page.get_by_label("Steps").fill("")
            cluster.fail_next_job("CUDA out of memory")
            page.get_by_role("button", name="From Text to Image").click()
            expect(status).to_contain_text("ask for fewer or smaller images")
            # Errors are said on the status line: no toasts pile up over the gallery.
            expect(page.locator(".toast-body")).to_have_count(0)

            # The prompt's counter says the limit as one types, in the server's format.
            page.get_by_label("Prompt", exact=True).fill("x" * 2001)
            expect(page.locator("#prompt-count")).to_have_text(
                "2,001 / 2,000 characters: 1 too many")
            page.get_by_role("button", name="From Text to Image").click()
            expect(status).to_contain_text("Prompt is 2,001 characters long; the limit is 2,000")


def test_a_refused_prompt_is_not_told_to_try_again(
    browser: Browser, cluster: ClusterDouble  # noqa: F811
) -> None:
    cluster.add_service("refusing", input_path="refusing/in", output_path="refusing/out",
                        handler=services.error_writer("the prompt was refused", "InvalidRequest"))
    with running_app(cluster_settings(cluster.oscar_endpoint, service="refusing")) as app:
        page = browser.new_page()
        try:
            assert app.url is not None
            log_in(page, app.url)
            page.get_by_label("Prompt", exact=True).fill("something not allowed")
            page.get_by_role("button", name="From Text to Image").click()
            status = page.locator("#status")
            expect(status).to_contain_text("the prompt was refused. Change the request")
            expect(status).not_to_contain_text("Try again")
        finally:
            page.close()


def test_the_advanced_panel_shows_hints_and_the_page_its_own_name(
    browser: Browser, cluster: ClusterDouble  # noqa: F811
) -> None:
    with running_app(cluster_settings(cluster.oscar_endpoint)) as app:
        page = browser.new_page()
        try:
            assert app.url is not None
            log_in(page, app.url)
            assert "Gradio" not in page.title()
            for tag in page.locator('meta[property^="og:"], meta[name^="twitter:"]').all():
                content = tag.get_attribute("content") or ""
                assert "Gradio" not in content and "Click to try" not in content, content
            advanced(page)
            for label, hint in [("Seed", "random"), ("Steps", "model default"),
                                ("Guidance", "model default")]:
                field = page.get_by_label(label, exact=True)
                expect(field).to_have_value("")
                assert hint in (field.get_attribute("placeholder") or "")
            # Nothing to act on yet: no empty "Seed used" box, no active-looking Cancel.
            expect(page.get_by_label("Seed used")).to_be_hidden()
            expect(page.locator("#cancel")).to_be_disabled()
            # An unticked box looks unticked, not disabled: a white box, a firm border.
            randomize = page.get_by_label("Randomize seed")
            randomize.uncheck()
            look = randomize.evaluate("box => [getComputedStyle(box).backgroundColor, "
                                      "getComputedStyle(box).borderTopColor]")
            assert look == ["rgb(255, 255, 255)", "rgb(107, 114, 128)"], look
            randomize.check()
            # No empty history box before the first run.
            expect(page.get_by_text("History (this login)")).to_be_hidden()
            # An example fills the prompt, and its counter follows.
            page.locator("#examples").get_by_text("a red fox in fresh snow").click()
            expect(page.get_by_label("Prompt", exact=True)).to_have_value(
                "a red fox in fresh snow, morning light, photograph"
            )
            expect(page.locator("#prompt-count")).to_have_text("50 / 2,000")
            # Gradio's Settings say nothing meant for Gradio's developers.
            page.get_by_text("Settings", exact=True).click()
            expect(page.get_by_text("Progressive Web App", exact=True)).to_be_visible()
            expect(page.get_by_text("launch(pwa=True)")).to_have_count(0)
            expect(page.get_by_text("Screen Studio allows you")).to_be_hidden()
        finally:
            page.close()


def test_cancel_says_cancelled_and_the_next_generate_works(browser: Browser) -> None:  # noqa: F811
    pytest.importorskip("diffusers", reason="the local backend needs the [local] extra")
    from tests.test_ui_local import local_settings

    with running_app(local_settings()) as app:
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        try:
            assert app.url is not None
            page.goto(app.url)
            advanced(page)
            # Large noise images: one step of the tiny model takes seconds here.
            fill(page, "Steps", "150")
            fill(page, "Size (width × height)", "1024x1024")
            page.get_by_label("Prompt", exact=True).fill("a slow fox")
            page.get_by_role("button", name="From Text to Image").click()
            expect(page.locator("#results")).to_contain_text("Generating · step", timeout=120_000)

            page.get_by_role("button", name="Cancel").click()
            expect(page.locator("#status")).to_have_text("Cancelled")
            # Free at once: the progress is gone while the step still runs.
            expect(page.locator("#results")).not_to_contain_text("steps", timeout=1_500)
            expect(page.locator("#results").get_by_text("Error", exact=True)).to_be_hidden()

            fill(page, "Steps", "2")
            fill(page, "Size (width × height)", "64x64")
            page.get_by_role("button", name="From Text to Image").click()
            expect(page.locator("#results img")).to_have_count(6, timeout=120_000)
            expect(page.locator("#status")).to_contain_text("6 images")
        finally:
            page.close()


def test_cancel_of_a_cluster_job_says_cancelled_not_error(
    browser: Browser, slow_app: WebApp  # noqa: F811
) -> None:
    with signed_in_page(browser, slow_app, (1100, 900)) as page:
        page.get_by_label("Prompt", exact=True).fill("a lighthouse, cancelled")
        page.get_by_role("button", name="From Text to Image").click()
        results = page.locator("#results")
        expect(results).to_contain_text("Waiting for a GPU", timeout=10_000)

        page.get_by_role("button", name="Cancel").click()
        expect(page.locator("#status")).to_have_text("Cancelled")
        expect(results).not_to_contain_text("Waiting for a GPU", timeout=2_000)
        # Gradio's pill for a failed event says "Error": a cancel is no error. It came
        # once the server had ended the run: look after that.
        (session,) = slow_app.sessions.of_account(ADMIN[0])
        wait_until(lambda: not session.busy, what="the server ended the cancelled run")
        expect(results.get_by_text("Error", exact=True)).to_be_hidden()
        expect(page.locator("#status")).to_have_text("Cancelled")
        expect(page.locator(".toast-body.error")).to_have_count(0)

        page.get_by_role("button", name="From Text to Image").click()
        expect(page.locator("#results img")).to_have_count(6, timeout=30_000)
        expect(page.locator("#status")).to_contain_text("6 images")
        expect(results.get_by_text("Error", exact=True)).to_be_hidden()


def test_the_examples_sit_below_the_button_on_a_wide_screen(
    browser: Browser, cluster: ClusterDouble  # noqa: F811
) -> None:
    with running_app(cluster_settings(cluster.oscar_endpoint)) as app:
        with signed_in_page(browser, app, (1400, 900)) as page:
            prompt = page.locator("#prompt").bounding_box()
            button = page.locator("#generate").bounding_box()
            examples = page.locator("#examples").bounding_box()
            assert prompt and button and examples
            # The button right under the prompt: nothing pushes it down.
            assert button["y"] < examples["y"]
            assert button["y"] - (prompt["y"] + prompt["height"]) < 40
