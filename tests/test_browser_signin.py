"""Signing in, in a real browser: the login page, two logins of one account, EGI-style OIDC.

Chromium (Debian's) against the cluster double; the OIDC provider is
oidc-provider-mock on loopback, standing in for EGI Check-in.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, Request, expect

from oscar_sd.ui import WebApp
from tests.conftest import ADMIN
from tests.double import ClusterDouble, OidcProviderDouble
from tests.test_browser import browser, log_in, make_six_images, pytestmark  # noqa: F401
from tests.ui_fixtures import cluster_settings, running_app

CLIENT_ID = "oscar-sd-browser-tests"
#: The font of the page and the colours of its primary button.
LOOK = """() => {
  const font = getComputedStyle(document.querySelector("body")).fontFamily.split(",")[0];
  const button = getComputedStyle(document.querySelector("button[type=submit]"));
  return [font, button.backgroundColor, button.color];
}"""


@pytest.fixture
def oidc_app(oidc_cluster: ClusterDouble, oidc_provider: OidcProviderDouble,
             request: pytest.FixtureRequest) -> Iterator[WebApp]:
    root_path = getattr(request, "param", "")
    settings = cluster_settings(
        oidc_cluster.oscar_endpoint, root_path=root_path, oidc_issuer=oidc_provider.issuer,
        oidc_client_id=CLIENT_ID, oidc_client_secret="browser-tests-secret")
    with running_app(settings) as app:
        yield app


def sign_in_with_the_provider(page: Page, url: str, sub: str) -> list[str]:
    """Click "Sign in with EGI Check-in", authorize as ``sub``; the authorize URLs seen."""
    asked: list[str] = []

    def remember(request: Request) -> None:
        if "/oauth2/authorize" in request.url:
            asked.append(request.url)

    page.on("request", remember)
    page.goto(url)
    page.get_by_role("link", name="Sign in with EGI Check-in").click()
    page.locator("input[name=sub]").fill(sub)
    page.get_by_role("button", name="Authorize").click()
    expect(page.get_by_role("button", name="From Text to Image")).to_be_visible(timeout=20_000)
    return asked


def test_the_login_page_says_what_it_is_and_keeps_the_user_name(
    browser: Browser, cluster: ClusterDouble  # noqa: F811
) -> None:
    with running_app(cluster_settings(cluster.oscar_endpoint)) as app:
        page = browser.new_page()
        try:
            assert app.url is not None
            page.goto(app.url)
            assert "oscar-sd" in page.title() and "Gradio" not in page.title()
            og = page.locator('meta[property="og:title"]').get_attribute("content") or ""
            assert "Gradio" not in og
            # Words for people: no environment variable names.
            assert "OSCAR_SD_" not in (page.locator("body").text_content() or "")
            # The same look as the app: its font and its primary button's colour.
            login_look = page.evaluate(LOOK)
            page.get_by_label("Username").fill("oscar")
            page.get_by_label("Password").fill("not-the-password")
            page.get_by_role("button", name="Log in").click()
            expect(page.get_by_role("alert")).to_contain_text("Incorrect user name or password")
            expect(page.get_by_label("Username")).to_have_value("oscar")
            expect(page.get_by_label("Password")).to_have_value("")
            assert "not-the-password" not in page.content()
            assert len(app.sessions) == 0
            log_in(page, app.url)
            app_look = page.evaluate(LOOK.replace("body", ".gradio-container").replace(
                "button[type=submit]", "#generate"))
            assert login_look == app_look, (login_look, app_look)
        finally:
            page.close()


def test_two_logins_of_one_account_keep_images_apart_and_share_its_history(
    browser: Browser, cluster: ClusterDouble  # noqa: F811
) -> None:
    with running_app(cluster_settings(cluster.oscar_endpoint)) as app:
        assert app.url is not None
        first, second = browser.new_context(), browser.new_context()
        try:
            alice, bob = first.new_page(), second.new_page()
            log_in(alice, app.url, *ADMIN)
            log_in(bob, app.url, *ADMIN)
            make_six_images(alice, "alice's lighthouse")
            make_six_images(bob, "bob's harbour")
            make_six_images(bob, "bob's second try")
            expect(alice.locator("#history img")).to_have_count(1)
            expect(bob.locator("#history img")).to_have_count(2)  # his runs, as they come
            assert len(app.sessions.of_account(ADMIN[0])) == 2

            # Bob's image URLs are not Alice's to fetch.
            bobs = bob.locator("#results img").first.get_attribute("src") or ""
            assert alice.request.get(bobs).status == 404
            # The account's one history (basic auth is one account): read again on a
            # load (or after HISTORY_REREAD seconds), alice's run is in it too.
            bob.reload()
            expect(bob.locator("#history img")).to_have_count(3)

            alice.goto(app.url + "logout")
            expect(alice.get_by_label("Username")).to_be_visible()
            assert len(app.sessions.of_account(ADMIN[0])) == 1
            make_six_images(bob, "bob goes on")  # untouched by alice's logout
            expect(bob.locator("#history img")).to_have_count(4)
        finally:
            first.close()
            second.close()


@pytest.mark.parametrize("oidc_app", ["", "/sd"], indirect=True)
def test_sign_in_with_egi_check_in_then_make_images(
    browser: Browser, oidc_app: WebApp, oidc_cluster: ClusterDouble  # noqa: F811
) -> None:
    app = oidc_app
    assert app.url is not None
    base = app.url + app.settings.root_path.strip("/") + ("/" if app.settings.root_path else "")
    page = browser.new_page()
    try:
        # The page offers both ways in.
        page.goto(base)
        expect(page.get_by_label("Username")).to_be_visible()
        asked = sign_in_with_the_provider(page, base, "dana@egi.eu")
        assert asked and "code_challenge_method=S256" in asked[0]  # PKCE
        assert "offline_access" in asked[0]
        make_six_images(page, "signed in with a token")
        (session,) = app.sessions.of_account("dana@egi.eu")
        assert session.token is not None
        # The cluster saw dana's own MinIO keys, not the admin's.
        assert "dana@egi.eu" in oidc_cluster.storage.access_keys_used
        assert page.url.startswith(base), page.url
    finally:
        page.close()


def test_a_refused_renewal_says_sign_in_again(
    browser: Browser, oidc_app: WebApp, oidc_provider: OidcProviderDouble  # noqa: F811
) -> None:
    app = oidc_app
    assert app.url is not None
    page = browser.new_page()
    try:
        sign_in_with_the_provider(page, app.url, "eve@egi.eu")
        (session,) = app.sessions.of_account("eve@egi.eu")
        assert session.token is not None
        oidc_provider.revoke("eve@egi.eu")  # e.g. signed out everywhere at EGI
        session.token.expires_at = time.time()  # due for renewal now
        page.get_by_label("Prompt", exact=True).fill("after the revocation")
        page.get_by_role("button", name="From Text to Image").click()
        expect(page.get_by_text("Your sign-in has expired, sign in again").first).to_be_visible(
            timeout=20_000)
        assert app.sessions.of_account("eve@egi.eu") == []
        page.goto(app.url)  # the page sends them to sign in, and says why
        expect(page.get_by_role("alert")).to_contain_text("Your sign-in has expired")
    finally:
        page.close()
