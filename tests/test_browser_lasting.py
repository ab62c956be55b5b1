"""OIDC sign-ins outlive the app process (Chromium; app processes, and WebApps in this one):
a person signed in keeps working when the app restarts, and when their next visit
lands on another replica, both holding the same OSCAR_SD_SECRET_KEY. The cookie
holds the sealed sign-in; it never holds a password, and no page shows it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from urllib.parse import urlsplit

from playwright.sync_api import Browser, expect

from oscar_sd import Settings
from oscar_sd.ui import WebApp, build_app
from tests.double import ClusterDouble, OidcProviderDouble
from tests.test_browser import browser, make_six_images, pytestmark  # noqa: F401
from tests.test_browser_signin import CLIENT_ID, sign_in_with_the_provider
from tests.ui_fixtures import app_process, cluster_settings, free_port

SECRET = "the replicas' shared secret, from a Kubernetes Secret"


@contextmanager
def serving(settings: Settings, port: int) -> Iterator[WebApp]:
    app = build_app(settings)
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True)
    try:
        yield app
    finally:
        app.close()


def test_an_oidc_sign_in_survives_a_restart_and_reaches_another_replica(
    browser: Browser, oidc_cluster: ClusterDouble, oidc_provider: OidcProviderDouble  # noqa: F811
) -> None:
    settings = cluster_settings(
        oidc_cluster.oscar_endpoint, oidc_issuer=oidc_provider.issuer,
        oidc_client_id=CLIENT_ID, oidc_client_secret="browser-tests-secret",
        secret_key=SECRET)
    one, two = free_port(), free_port()
    page = browser.new_page()
    try:
        with serving(settings, one) as app:
            assert app.url is not None
            sign_in_with_the_provider(page, app.url, "erin@egi.eu")
            make_six_images(page, "before the restart")
            (cookie,) = [c for c in page.context.cookies() if c["name"] == "oscar-sd-session"]
            assert "refresh" not in cookie["value"] and cookie["httpOnly"]
        with serving(settings, one) as app:  # the same replica, restarted
            page.reload()
            make_six_images(page, "after the restart")
            assert [s.account for s in app.sessions.of_account("erin@egi.eu")] == ["erin@egi.eu"]
            # Its history came along: the bucket is erin's, not the app's.
            expect(page.locator("#history img")).to_have_count(2)
            # The next visit lands on the other replica (cookies do not care for ports).
            with serving(settings, two) as other:
                assert other.url is not None and urlsplit(other.url).port == two
                page.goto(other.url)
                make_six_images(page, "on the other replica")
                expect(page.locator("#history img")).to_have_count(3)
                assert len(other.sessions.of_account("erin@egi.eu")) == 1
    finally:
        page.close()


def test_two_replicas_behind_the_ingress_affinity_keep_a_person_working(
    browser: Browser, oidc_cluster: ClusterDouble, oidc_provider: OidcProviderDouble,  # noqa: F811
    tmp_path: Path,
) -> None:
    """manifests/deploy_gradio.yaml: 2 replicas, cookie affinity (tests/affinity_proxy.py),
    each an ``oscar-sd serve`` process of its own. The replica a person is on is killed;
    their next action lands on the other one, signed in, with their history."""
    from tests.affinity_proxy import AffinityProxy

    variables = {"OSCAR_SD_OIDC_ISSUER": oidc_provider.issuer,
                 "OSCAR_SD_OIDC_CLIENT_ID": CLIENT_ID,
                 "OSCAR_SD_OIDC_CLIENT_SECRET": "browser-tests-secret",
                 "OSCAR_SD_SECRET_KEY": SECRET, "OSCAR_SD_TIMEOUT": "30"}
    ports = [free_port(), free_port()]
    page = browser.new_page()
    with ExitStack() as replicas:
        processes = [replicas.enter_context(app_process(
            oidc_cluster.oscar_endpoint, port, tmp_path / str(port), **variables))
            for port in ports]
        try:
            with AffinityProxy([f"http://127.0.0.1:{port}/" for port in ports]) as proxy:
                sign_in_with_the_provider(page, proxy.url, "fay@egi.eu")
                make_six_images(page, "on the first replica")
                mine = proxy.routed[-1]
                assert set(proxy.routed) == {mine}  # affinity: every request on one replica
                processes[mine].kill()  # its pod is gone, and all it held in memory
                processes[mine].wait(10)
                page.reload()
                make_six_images(page, "on the other replica")
                assert proxy.routed[-1] == 1 - mine
                # Still fay, and her history (in her bucket) came along.
                expect(page.locator("#history img")).to_have_count(2)
                expect(page.get_by_text("fay@egi.eu")).to_be_visible()
        finally:
            page.close()
