"""OIDC groups (issue 15): the `entitlements` scope, and a person refused for their groups.

OSCAR reads an OIDC user's groups from the ``entitlements`` claim (grycap/oscar
``pkg/utils/auth/oidc.go``, ``EGIClaims``) and answers 401 to a user in none of
its ``OIDC_GROUPS``, on ``/system/config`` too, so only an admitted user can
read ``oidc_groups``. The double does the same (``ClusterDouble(oidc_groups=)``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from html import unescape
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from oscar_sd import AuthenticationError, OscarSD, Settings
from oscar_sd.ui import WebApp
from oscar_sd.ui.oidc import egi_groups
from tests.conftest import ADMIN, SERVICE
from tests.double import ClusterDouble, OidcProviderDouble, services
from tests.ui_fixtures import cluster_settings, running_app

ADMITTED = "vo.oscar.eu"


@pytest.fixture
def grouped_cluster(oidc_provider: OidcProviderDouble) -> Iterator[ClusterDouble]:
    with ClusterDouble(admin=ADMIN, oidc=oidc_provider, oidc_groups=(ADMITTED,)) as cluster:
        cluster.add_service(SERVICE, input_path=f"{SERVICE}/in", output_path=f"{SERVICE}/out",
                            handler=services.fake_generator)
        yield cluster


def test_the_default_scopes_ask_for_the_claim_oscar_reads() -> None:
    scopes = Settings().oidc_scopes.split()
    assert "entitlements" in scopes and "eduperson_entitlement" not in scopes
    assert {"openid", "offline_access"} <= set(scopes)


def test_groups_are_read_from_entitlements_as_oscar_reads_them() -> None:
    claims = {"entitlements": [
        "urn:mace:egi.eu:group:VO.Oscar.EU:role=member#aai.egi.eu",
        "urn:mace:egi.eu:group:vo.oscar.eu:admins:role=owner#aai.egi.eu",
        "urn:mace:other:group:ignored:role=member", "urn:mace:egi.eu:group"],
        "eduperson_entitlement": ["urn:mace:egi.eu:group:old.claim:role=member#aai.egi.eu"]}
    assert egi_groups(claims) == ("vo.oscar.eu",)
    assert egi_groups({}) == ()


def get_config(cluster: ClusterDouble, token: str) -> httpx.Response:
    return httpx.get(f"{cluster.oscar_endpoint}/system/config",
                     headers={"Authorization": f"Bearer {token}"})


def test_the_double_refuses_a_user_in_none_of_its_groups_with_401(
    grouped_cluster: ClusterDouble,
) -> None:
    outsider = grouped_cluster.sign_in("outsider-1@egi.eu", groups=["vo.elsewhere.eu"])
    member = grouped_cluster.sign_in("member-1@egi.eu", groups=["vo.elsewhere.eu", ADMITTED])

    refused = get_config(grouped_cluster, outsider["access_token"])
    admitted = get_config(grouped_cluster, member["access_token"])

    assert (refused.status_code, refused.content) == (401, b"")
    assert admitted.status_code == 200
    assert admitted.json()["config"]["oidc_groups"] == [ADMITTED]


@pytest.mark.anyio
async def test_the_library_learns_the_admitted_groups_and_says_401_plainly(
    grouped_cluster: ClusterDouble,
) -> None:
    member = grouped_cluster.sign_in("member-2@egi.eu")  # in the admitted group by default
    async with await OscarSD.connect(grouped_cluster.oscar_endpoint, service=SERVICE,
                                     token=member["access_token"]) as client:
        assert client.oidc_groups == (ADMITTED,)
    outsider = grouped_cluster.sign_in("outsider-2@egi.eu", groups=[])
    with pytest.raises(AuthenticationError) as refused:
        await OscarSD.connect(grouped_cluster.oscar_endpoint, service=SERVICE,
                              token=outsider["access_token"])
    assert refused.value.status == 401
    assert "admits only members of its OIDC groups" in str(refused.value)  # CLI and library


@pytest.fixture
def oidc_app(grouped_cluster: ClusterDouble, oidc_provider: OidcProviderDouble,
             ) -> Iterator[WebApp]:
    settings = cluster_settings(
        grouped_cluster.oscar_endpoint, oidc_issuer=oidc_provider.issuer,
        oidc_client_id="oscar-sd-groups-tests", oidc_client_secret="secret")
    with running_app(settings) as app:
        yield app


def sign_in_through_the_page(app: WebApp, sub: str) -> tuple[httpx.Response, str]:
    """The browser's round trip: app -> provider (authorize as ``sub``) -> app's callback.
    The callback's answer, and the scopes the app asked the provider for."""
    assert app.url is not None
    with httpx.Client(base_url=app.url, timeout=20) as browser:
        to_provider = browser.get("/login/oidc")
        assert to_provider.status_code == 302
        authorize = to_provider.headers["location"]
        scopes = parse_qs(urlsplit(authorize).query)["scope"][0]
        back = httpx.post(authorize, data={"sub": sub})
        assert back.status_code == 302
        callback = urlsplit(back.headers["location"])
        return browser.get(f"{callback.path}?{callback.query}"), scopes


def alert(page: httpx.Response) -> str:
    found = re.search(r'role="alert"[^>]*>(.*?)</', page.text, re.S)
    assert found, page.text[:2000]
    return " ".join(unescape(found.group(1)).split())


def test_a_person_outside_the_clusters_groups_is_told_so_at_sign_in(
    oidc_app: WebApp, oidc_provider: OidcProviderDouble,
) -> None:
    oidc_provider.set_groups("zoe@egi.eu", ["vo.elsewhere.eu"])
    page, scopes = sign_in_through_the_page(oidc_app, "zoe@egi.eu")

    assert "entitlements" in scopes.split()
    assert page.status_code == 401
    said = alert(page)
    assert "the cluster does not admit your account" in said
    assert "your sign-in shows you in vo.elsewhere.eu" in said
    assert "operator chose" in said  # OSCAR shows its groups to admitted users only
    assert "expired" not in said.lower()
    assert len(oidc_app.sessions) == 0

    # Once an admitted login has read /system/config, the app can name the groups.
    assert oidc_app.url is not None
    httpx.post(oidc_app.url + "login", data={"username": ADMIN[0], "password": ADMIN[1]},
               timeout=20).raise_for_status()
    page, _ = sign_in_through_the_page(oidc_app, "zoe@egi.eu")
    assert f"it admits only members of the group {ADMITTED}" in alert(page)


def test_a_person_in_an_admitted_group_signs_in(
    oidc_app: WebApp, oidc_provider: OidcProviderDouble,
) -> None:
    oidc_provider.set_groups("yann@egi.eu", [ADMITTED])
    page, _ = sign_in_through_the_page(oidc_app, "yann@egi.eu")
    assert page.status_code == 303, page.text[:500]
    assert len(oidc_app.sessions.of_account("yann@egi.eu")) == 1
