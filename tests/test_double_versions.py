"""The cluster double plays OSCAR v3.6.5, v4.0.0 and v4.1.2, and OSCAR's MinIO policies.

Each behaviour here is one the double names its upstream file for
(tests/double/versions.py, policies.py, system.py).
"""

from __future__ import annotations

import pytest
import requests
from minio import Minio
from minio.error import S3Error

from tests.double import ClusterDouble

ADMIN = ("oscar", "oscar-pw")
VERSIONS = ["3.6.5", "4.0.0", "4.1.2"]


def _service(name: str, api_port: object, **extra: object) -> dict[str, object]:
    return {"name": name, "image": "img", "script": "#!/bin/sh\n",
            "output": [{"storage_provider": "minio.default", "path": f"{name}/out"}],
            "expose": {"api_port": api_port, "min_scale": 1, "max_scale": 1}, **extra}


@pytest.fixture
def double(versioned: ClusterDouble) -> ClusterDouble:
    """The double of the release given (conftest.py ``versioned``), with a group and GPUs."""
    versioned.oidc_groups = ("vo.example.eu",)
    versioned.gpus = 2
    return versioned


@pytest.mark.parametrize("versioned", VERSIONS, indirect=["versioned"])
def test_system_info_answers_the_version_played(double: ClusterDouble) -> None:
    info = requests.get(f"{double.oscar_endpoint}/system/info", auth=ADMIN, timeout=10).json()
    assert info["version"] == f"v{double.oscar_version}"


def test_the_newest_release_is_the_default_and_unknown_ones_are_refused() -> None:
    assert ClusterDouble().oscar_version == "4.1.2"
    assert ClusterDouble(oscar_version="4.0").oscar_version == "4.0.0"
    with pytest.raises(ValueError, match=r"3\.6\.5"):
        ClusterDouble(oscar_version="3.5.0")


@pytest.mark.parametrize(("versioned", "right", "wrong"), [
    ("3.6.5", 8080, [8080]), ("4.0.0", 8080, [8080]), ("4.1.2", [8080], 8080),
], indirect=["versioned"])
def test_the_api_port_shape_of_another_release_is_a_400(
        double: ClusterDouble, right: object, wrong: object) -> None:
    url = f"{double.oscar_endpoint}/system/services"
    refused = requests.post(url, json=_service("wrong", wrong), auth=ADMIN, timeout=10)
    assert refused.status_code == 400
    assert "cannot unmarshal" in refused.text and "api_port" in refused.text
    assert "wrong" not in double.runner.services
    assert requests.post(url, json=_service("right", right), auth=ADMIN,
                         timeout=10).status_code == 201


def test_v4_1_refuses_oscar_clis_node_port_zero(double: ClusterDouble) -> None:
    definition = _service("svc", [8080])
    definition["expose"]["nodePort"] = 0  # type: ignore[index]
    answer = requests.post(f"{double.oscar_endpoint}/system/services", json=definition,
                           auth=ADMIN, timeout=10)
    assert answer.status_code == 400 and "nodePort" in answer.text


@pytest.mark.parametrize(("versioned", "base_path"), [
    ("3.6.5", None), ("4.0.0", "/system/services/app/exposed"),
    ("4.1.2", "/system/services/app/exposed"),
], indirect=["versioned"])
def test_oscar_service_base_path_only_since_v4_0(double: ClusterDouble,
                                                 base_path: str | None) -> None:
    port = [7000] if double.oscar_version == "4.1.2" else 7000
    definition = _service("app", port, environment={"Variables": {"port": "7000"}})
    assert requests.post(f"{double.oscar_endpoint}/system/services", json=definition,
                         auth=ADMIN, timeout=10).status_code == 201
    env = double.exposed_environment("app")
    assert env.get("OSCAR_SERVICE_BASE_PATH") == base_path
    assert env["port"] == "7000"  # `Variables:` reached OSCAR's `variables`, as Go matches


def test_config_lists_the_groups_and_status_the_gpus(double: ClusterDouble) -> None:
    config = requests.get(f"{double.oscar_endpoint}/system/config", auth=ADMIN, timeout=10)
    assert config.json()["oidc_groups"] == ["vo.example.eu"]
    status = requests.get(f"{double.oscar_endpoint}/system/status", auth=ADMIN, timeout=10)
    assert status.json()["cluster"]["metrics"]["gpu"]["total_gpu"] == 2


@pytest.mark.parametrize("versioned", ["3.6.5", "4.1.2"], indirect=["versioned"])
def test_the_quotas_api_exists_since_v4_with_kueues_defaults(double: ClusterDouble) -> None:
    token = double.sign_in("alice")["access_token"]
    bearer = {"Authorization": f"Bearer {token}"}
    own = requests.get(f"{double.oscar_endpoint}/system/quotas/user", headers=bearer,
                       timeout=10)
    if double.oscar_version == "3.6.5":
        assert own.status_code == 404
        return
    assert own.json()["resources"]["cpu"]["max"] == 2000
    assert own.json()["resources"]["memory"]["max"] == 2 * 1024**3
    assert own.json()["resources"]["gpu"]["max"] == 0
    url = f"{double.oscar_endpoint}/system/quotas/user/alice"
    assert requests.put(url, json={"cpu": "8000"}, headers=bearer, timeout=10).status_code == 403
    assert requests.put(url, json={"cpu": "8000", "gpu": "1"}, auth=ADMIN,
                        timeout=10).status_code == 200
    own = requests.get(f"{double.oscar_endpoint}/system/quotas/user", headers=bearer,
                       timeout=10).json()
    assert own["resources"]["cpu"]["max"] == 8000 and own["resources"]["gpu"]["max"] == 1


# -- MinIO policies per owner and visibility (policies.py) ----------------------------


def _create(double: ClusterDouble, definition: dict[str, object],
            token: str | None = None) -> None:
    auth = None if token else ADMIN
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    answer = requests.post(f"{double.oscar_endpoint}/system/services", json=definition,
                           auth=auth, headers=headers, timeout=10)
    assert answer.status_code == 201, answer.text


def _minio(double: ClusterDouble, uid: str) -> Minio:
    access, secret = double.minio_keys_for(uid)
    return Minio(double.minio_endpoint.removeprefix("http://"), access_key=access,
                 secret_key=secret, secure=False)


def _listen_refusal(client: Minio, bucket: str) -> str | None:
    """The S3 error code of a listen request on ``bucket``, or None when it is allowed.

    The request listen_bucket_notification sends (minio-py builds it with ``_execute``),
    made directly: its answer's head is all this needs, and it comes with the first
    keep-alive, where the iterator would wait for an event.
    """
    try:
        response = client._execute(
            "GET", bucket, query_params={"prefix": "out/", "suffix": "",
                                         "events": ("s3:ObjectCreated:*",)},
            preload_content=False)
    except S3Error as exc:
        return exc.code
    response.close()
    return None


def test_a_service_the_admin_created_gives_oidc_users_no_access(double: ClusterDouble) -> None:
    _create(double, _service("admins", [8080], visibility="public"))
    assert double.runner.services["admins"].definition["owner"] == "cluster_admin"
    with pytest.raises(S3Error) as refused:
        _minio(double, "alice").put_object("admins", "in/x.json", _data(), 2)
    assert refused.value.code == "AccessDenied"


def test_a_private_service_is_its_owners_only(double: ClusterDouble) -> None:
    _create(double, _service("mine", [8080]), token=double.sign_in("alice")["access_token"])
    assert double.runner.services["mine"].definition["visibility"] == "private"
    _minio(double, "alice").put_object("mine", "in/x.json", _data(), 2)
    with pytest.raises(S3Error):
        _minio(double, "bob").put_object("mine", "in/y.json", _data(), 2)
    bob = {"Authorization": f"Bearer {double.sign_in('bob')['access_token']}"}
    listed = requests.get(f"{double.oscar_endpoint}/system/services", headers=bob, timeout=10)
    assert listed.json() == []


def test_restricted_users_may_read_and_write_but_not_listen(double: ClusterDouble) -> None:
    double.minio_keys_for("bob")
    _create(double, _service("shared", [8080], visibility="restricted", allowed_users=["bob"]),
            token=double.sign_in("alice")["access_token"])
    bob = _minio(double, "bob")
    bob.put_object("shared", "out/x.zip", _data(), 2)
    assert bob.get_object("shared", "out/x.zip").read() == b"{}"
    assert _listen_refusal(bob, "shared") == "AccessDenied"
    assert _listen_refusal(_minio(double, "alice"), "shared") is None  # the owner may
    with pytest.raises(S3Error):
        _minio(double, "carol").get_object("shared", "out/x.zip")


def test_public_services_are_everyones_including_listen(double: ClusterDouble) -> None:
    _create(double, _service("open", [8080], visibility="public"),
            token=double.sign_in("alice")["access_token"])
    assert _listen_refusal(_minio(double, "carol"), "open") is None


def _data() -> object:
    import io
    return io.BytesIO(b"{}")
