"""Dead pages say so (Chromium): a page whose session ended goes to the sign-in page
with a word of why, within 10 s: Back after Log out, and an app restart that a
password login does not survive (the password is never kept)."""

from __future__ import annotations

from urllib.parse import urlsplit

from playwright.sync_api import Browser, expect

from oscar_sd.ui import build_app
from tests.double import ClusterDouble
from tests.test_browser import browser, log_in, pytestmark  # noqa: F401
from tests.ui_fixtures import cluster_settings, running_app

WITHIN_10_S = 10_000


def test_back_after_log_out_and_an_app_restart_lead_to_the_sign_in_page(
    browser: Browser, cluster: ClusterDouble  # noqa: F811
) -> None:
    settings = cluster_settings(cluster.oscar_endpoint)
    page = browser.new_page()
    try:
        with running_app(settings) as app:
            assert app.url is not None
            url, port = app.url, urlsplit(app.url).port
            log_in(page, url)
            page.get_by_role("link", name="Log out").click()
            expect(page.get_by_label("Username")).to_be_visible()
            page.go_back()  # the page that looked alive
            expect(page).to_have_url(url + "login?why=signed-out", timeout=WITHIN_10_S)
            expect(page.get_by_role("alert")).to_have_text(
                "You are signed out. Sign in again to go on.")

            log_in(page, url)
        # The app restarts on the same address; the tab stays open.
        again = build_app(settings)
        again.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True)
        try:
            expect(page).to_have_url(url + "login?why=restarted", timeout=WITHIN_10_S)
            expect(page.get_by_role("alert")).to_contain_text("The app restarted")
        finally:
            again.close()
    finally:
        page.close()
