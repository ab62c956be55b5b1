"""Who talks to the cluster: the one admin account, OIDC users, their tokens and buckets.

Against the cluster double with a loopback OIDC provider (oidc-provider-mock):
tokens are checked at its userinfo endpoint as OSCAR checks them, each user
gets MinIO keys of their own, and a user's key reaches only their buckets.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from minio import Minio
from minio.error import S3Error

from oscar_sd import (
    AuthenticationError,
    GenerationRequest,
    OidcToken,
    OscarSD,
    ServiceNotAvailableError,
    SignInExpired,
)
from oscar_sd._tokens import LEEWAY
from tests.conftest import ADMIN, SERVICE
from tests.double import ClusterDouble, OidcProviderDouble, services

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def short_lived() -> Iterator[OidcProviderDouble]:
    """A provider whose access tokens live exactly LEEWAY seconds: due for renewal at once."""
    with OidcProviderDouble(token_lifetime=LEEWAY) as provider:
        yield provider


def renewing_token(provider: OidcProviderDouble, sub: str) -> OidcToken:
    return OidcToken.from_response(
        provider.sign_in(sub), token_endpoint=provider.token_endpoint,
        client_id="oscar-sd-tests", client_secret="secret",
    )


async def connect(cluster: ClusterDouble, **options: Any) -> OscarSD:
    return await OscarSD.connect(cluster.oscar_endpoint, service=SERVICE,
                                 connect_timeout=5.0, **options)


def minio_of(cluster: ClusterDouble, uid: str) -> Minio:
    access_key, secret_key = cluster.minio_keys_for(uid)
    return Minio(cluster.minio_endpoint.removeprefix("http://"), access_key, secret_key,
                 secure=False)


# -- tokens ---------------------------------------------------------------------------


def test_a_token_is_due_for_renewal_60_s_before_it_expires():
    token = OidcToken("access", refresh_token="refresh", expires_at=1000.0,
                      token_endpoint="https://issuer/token", client_id="app")
    assert not token.refresh_due(now=1000.0 - LEEWAY - 1)
    assert token.refresh_due(now=1000.0 - LEEWAY)
    assert "access" not in repr(token) and "refresh" not in repr(token).replace("refreshable", "")


async def test_the_token_is_renewed_before_it_expires_and_oscar_gets_the_new_one(
    short_lived: OidcProviderDouble,
):
    with ClusterDouble(admin=ADMIN, oidc=short_lived) as cluster:
        cluster.add_service(SERVICE, input_path=f"{SERVICE}/in", output_path=f"{SERVICE}/out",
                            handler=services.fake_generator)
        token = renewing_token(short_lived, "dora@egi.eu")
        assert token.refresh_due(), "a token with LEEWAY seconds left is due at once"
        with anyio.fail_after(20):
            sd = await connect(cluster, token=token)
            jobs = await sd.list_jobs()  # a cluster call after connecting, with the token
        assert token.refreshes >= 1
        assert token.expires_at is not None and token.expires_at > time.time()
        assert jobs == {}
        await sd.aclose()


async def test_a_refused_renewal_ends_the_sign_in(short_lived: OidcProviderDouble):
    with ClusterDouble(admin=ADMIN, oidc=short_lived) as cluster:
        cluster.add_service(SERVICE, input_path=f"{SERVICE}/in", output_path=f"{SERVICE}/out",
                            handler=services.fake_generator)
        token = renewing_token(short_lived, "erin@egi.eu")
        short_lived.revoke("erin@egi.eu")  # signed out at the provider
        with anyio.fail_after(20), pytest.raises(SignInExpired) as caught:
            await connect(cluster, token=token)
        assert str(caught.value) == "Your sign-in has expired, sign in again."
        assert token.expired
        with pytest.raises(SignInExpired):  # and it stays ended
            await token.fresh()


async def test_the_cli_style_refresh_token_arguments_renew_too(short_lived: OidcProviderDouble):
    with ClusterDouble(admin=ADMIN, oidc=short_lived) as cluster:
        cluster.add_service(SERVICE, input_path=f"{SERVICE}/in", output_path=f"{SERVICE}/out",
                            handler=services.fake_generator)
        answer = short_lived.sign_in("fay@egi.eu")
        with anyio.fail_after(20):
            sd = await connect(
                cluster, token=answer["access_token"], refresh_token=answer["refresh_token"],
                token_endpoint=short_lived.token_endpoint, client_id="oscar-sd-tests",
                client_secret="secret")
        assert sd.token is not None and sd.token.refreshes == 1  # no expiry known: renewed
        await sd.aclose()


# -- accounts and storage -----------------------------------------------------------


async def test_two_oidc_users_use_their_own_minio_keys_on_one_service(
    oidc_cluster: ClusterDouble,
):
    cluster = oidc_cluster
    alice = await connect(cluster, token=cluster.sign_in("alice@egi.eu")["access_token"])
    bob = await connect(cluster, token=cluster.sign_in("bob@egi.eu")["access_token"])
    with anyio.fail_after(20):
        one = await alice.generate(GenerationRequest(prompt="alice's", seed=1, num_images=1))
        two = await bob.generate(GenerationRequest(prompt="bob's", seed=2, num_images=1))
    assert one.images and two.images
    assert cluster.storage.access_keys_used == {"alice@egi.eu", "bob@egi.eu"}
    assert cluster.user_minio_keys["alice@egi.eu"] != cluster.user_minio_keys["bob@egi.eu"]
    # A user's key reaches the buckets of services open to them, not others.
    cluster.make_bucket("somebody-elses")
    with pytest.raises(S3Error) as denied:
        list(minio_of(cluster, "alice@egi.eu").list_objects("somebody-elses"))
    assert denied.value.code == "AccessDenied"


async def test_an_isolated_service_uses_the_users_private_bucket(oidc_cluster: ClusterDouble):
    cluster = oidc_cluster
    users = ["alice-0123456789@egi.eu", "bob-9876543210@egi.eu"]
    definition = cluster.add_service(
        "private-sd", input_path="private-sd/input", output_path="private-sd/output",
        handler=services.fake_generator, isolation_level="USER", allowed_users=users)
    assert definition["bucket_list"] == ["private-sd-alice-0123", "private-sd-bob-987654"]

    alice = await OscarSD.connect(cluster.oscar_endpoint, service="private-sd",
                                  token=cluster.sign_in(users[0])["access_token"],
                                  keep_objects=True)
    assert (alice.input_path.bucket, alice.input_path.folder) == ("private-sd-alice-0123",
                                                                  "input")
    assert (alice.output_path.bucket, alice.output_path.folder) == ("private-sd-alice-0123",
                                                                    "output")
    with anyio.fail_after(20):
        result = await alice.generate(GenerationRequest(prompt="mine only", num_images=1))
    assert cluster.list_keys("private-sd-alice-0123") == sorted(
        [f"input/{result.job_id}.json", f"output/{result.job_id}.zip"])
    assert cluster.list_keys("private-sd") == []  # nothing in the shared bucket
    with pytest.raises(S3Error):  # bob cannot read alice's bucket
        list(minio_of(cluster, users[1]).list_objects("private-sd-alice-0123", recursive=True))

    # The admin (basic auth) uses the shared bucket; a user not allowed cannot connect.
    admin = await OscarSD.connect(cluster.oscar_endpoint, service="private-sd",
                                  user=ADMIN[0], password=ADMIN[1])
    assert admin.input_path.bucket == "private-sd"
    # (OSCAR answers 403: the person is told only to ask the operator.)
    with pytest.raises(ServiceNotAvailableError):
        await OscarSD.connect(cluster.oscar_endpoint, service="private-sd",
                              token=cluster.sign_in("mallory@egi.eu")["access_token"])


async def test_with_keep_password_false_the_password_is_dropped(cluster: ClusterDouble):
    sd = await connect(cluster, user=ADMIN[0], password=ADMIN[1], keep_password=False)
    assert ADMIN[1] not in repr(vars(sd._cluster.client))
    with pytest.raises(AuthenticationError, match="Log in again"):
        await sd.list_jobs()
    with anyio.fail_after(20):  # generating needs only what OSCAR issued (the storage keys)
        result = await sd.generate(GenerationRequest(prompt="no password kept", num_images=1))
    assert result.images
