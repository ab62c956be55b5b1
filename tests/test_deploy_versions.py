"""``oscar-sd deploy`` sends what the cluster's OSCAR version accepts, owned by whoever deploys.

Against the double of each release (tests/double/versions.py): the manifests
deploy as they are on v3.6.5, v4.0.0 and v4.1.2; a token deploy is the
person's, shared as asked; MinIO's root keys go in only when asked for; the
app's root path works where OSCAR sets no OSCAR_SERVICE_BASE_PATH; a service
that asks more than the caller's Kueue quota is warned about.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from oscar_sd import DeployRefused, deploy_service
from oscar_sd._settings import Settings
from tests.double import ClusterDouble

pytestmark = pytest.mark.anyio

REPO = Path(__file__).resolve().parents[1]
WARM_FDL = REPO / "manifests" / "stable-diffusion-warm.yaml"
APP_FDL = REPO / "manifests" / "app.yaml"
JOB_FDL = REPO / "manifests" / "stable-diffusion.yaml"
ADMIN = ("oscar", "oscar-pw")
VERSIONS = ["3.6.5", "4.0.0", "4.1.2"]


@pytest.fixture
def double(versioned: ClusterDouble) -> ClusterDouble:
    """The double of the release given (conftest.py ``versioned``)."""
    return versioned


async def _deploy(double: ClusterDouble, fdl: Path, token: str | None = None,
                  **options: object) -> tuple[object, list[str]]:
    said: list[str] = []
    credentials: dict[str, object] = (
        {"token": token} if token else {"user": ADMIN[0], "password": ADMIN[1]})
    deployed = await deploy_service(double.oscar_endpoint, fdl_path=fdl, **credentials,
                                    wait_seconds=30, on_progress=said.append, **options)
    return deployed, said


@pytest.mark.parametrize("versioned", VERSIONS, indirect=True)
async def test_the_warm_service_and_the_app_deploy_on_each_release(
        double: ClusterDouble) -> None:
    token = double.sign_in("alice")["access_token"]
    warm, said = await _deploy(double, WARM_FDL, token=token)
    await _deploy(double, APP_FDL, token=token)

    assert warm.version == f"v{double.oscar_version}"  # type: ignore[attr-defined]
    for name, port in (("stable-diffusion-warm", 8080), ("oscar-sd", 7000)):
        expose = double.runner.services[name].definition["expose"]
        assert expose["api_port"] == ([port] if double.oscar_version == "4.1.2" else port)
        assert "nodePort" not in expose
    assert any(f"OSCAR v{double.oscar_version}" in line for line in said)


@pytest.mark.parametrize("versioned", ["3.6.5", "4.1.2"], indirect=True)
async def test_the_apps_root_path_works_without_oscar_service_base_path(
        double: ClusterDouble, monkeypatch: pytest.MonkeyPatch) -> None:
    await _deploy(double, APP_FDL, token=double.sign_in("alice")["access_token"])
    env = double.exposed_environment("oscar-sd")
    assert ("OSCAR_SERVICE_BASE_PATH" in env) == (double.oscar_version != "3.6.5")
    for name in ("OSCAR_SD_ROOT_PATH", "OSCAR_SERVICE_BASE_PATH"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert Settings().root_path == "/system/services/oscar-sd/exposed"


async def test_a_renamed_app_gets_its_own_root_path(double: ClusterDouble,
                                                    tmp_path: Path) -> None:
    fdl = tmp_path / "app.yaml"
    fdl.write_text(APP_FDL.read_text().replace("name: oscar-sd", "name: my-sd"))
    (tmp_path / "app.sh").write_text((REPO / "manifests" / "app.sh").read_text())
    await _deploy(double, fdl, token=double.sign_in("alice")["access_token"])
    variables = double.runner.services["my-sd"].definition["environment"]["variables"]
    assert variables["OSCAR_SD_ROOT_PATH"] == "/system/services/my-sd/exposed"


async def test_the_admin_password_puts_no_root_keys_in_a_service_unless_asked(
        double: ClusterDouble) -> None:
    with pytest.raises(DeployRefused, match="--use-root-keys"):
        await _deploy(double, WARM_FDL)
    assert "stable-diffusion-warm" not in double.runner.services

    _, said = await _deploy(double, WARM_FDL, use_root_keys=True)
    secrets = double.runner.services["stable-diffusion-warm"].definition["environment"]
    assert secrets["secrets"]["OSCAR_SD_MINIO_ACCESS_KEY"] == double.minio_access_key
    assert any("root keys" in line and line.startswith("warning:") for line in said)
    assert not any(double.minio_secret_key in line for line in said)


async def test_a_token_deploy_is_the_persons_own_with_their_keys_and_sharing(
        double: ClusterDouble) -> None:
    token = double.sign_in("alice")["access_token"]
    deployed, _ = await _deploy(double, WARM_FDL, token=token, visibility="restricted",
                                allowed_users=["bob", "carol"])
    definition = double.runner.services["stable-diffusion-warm"].definition
    assert definition["owner"] == "alice"
    assert definition["visibility"] == "restricted"
    assert definition["allowed_users"] == ["bob", "carol"]
    alice_access, alice_secret = double.minio_keys_for("alice")
    assert definition["environment"]["secrets"] == {
        "OSCAR_SD_MINIO_ACCESS_KEY": alice_access, "OSCAR_SD_MINIO_SECRET_KEY": alice_secret}
    assert any("listen" in warning for warning in deployed.warnings)  # type: ignore[attr-defined]


async def test_an_unknown_visibility_is_refused_before_anything_is_sent(
        double: ClusterDouble) -> None:
    with pytest.raises(DeployRefused, match="private, restricted, public"):
        await _deploy(double, JOB_FDL, token=double.sign_in("alice")["access_token"],
                      visibility="everyone")
    assert double.oscar_requests["POST /system/services"] == 0


@pytest.mark.parametrize("versioned", ["4.0.0", "4.1.2"], indirect=True)
async def test_deploy_warns_when_the_service_asks_more_than_the_quota(
        double: ClusterDouble) -> None:
    deployed, said = await _deploy(double, JOB_FDL, token=double.sign_in("alice")["access_token"])
    (warning,) = [w for w in deployed.warnings if "quota" in w]  # type: ignore[attr-defined]
    assert "4 CPU asked, the quota allows 2" in warning and "1 GPU asked" in warning
    assert "PUT /system/quotas/user/alice" in warning
    assert f"warning: {warning}" in said

    double.set_quota("alice", cpu=8000, memory=16 * 1024**3, gpu=1)
    deployed, _ = await _deploy(double, JOB_FDL, token=double.sign_in("alice")["access_token"])
    assert not [w for w in deployed.warnings if "quota" in w]  # type: ignore[attr-defined]


@pytest.mark.parametrize("versioned", ["3.6.5"], indirect=True)
async def test_no_quota_call_where_the_release_has_no_quotas_api(double: ClusterDouble) -> None:
    await _deploy(double, JOB_FDL, token=double.sign_in("alice")["access_token"])
    assert double.oscar_requests["GET /system/quotas/user"] == 0


@pytest.mark.parametrize("fdl", [JOB_FDL, WARM_FDL, APP_FDL], ids=["job", "warm", "app"])
def test_the_manifests_say_what_oscar_cli_carries(fdl: Path) -> None:
    """oscar-cli decodes with exact YAML keys (`Variables:`) and v4.1 refuses a nodePort."""
    import yaml

    (cluster,) = yaml.safe_load(fdl.read_text())["functions"]["oscar"]
    (entry,) = cluster.values()
    assert set(entry.get("environment") or {}) <= {"Variables", "secrets"}
    assert "nodePort" not in (entry.get("expose") or {})
    if fdl == APP_FDL:  # no affinity on OSCAR's exposed Ingress: one replica
        assert entry["expose"]["min_scale"] == entry["expose"]["max_scale"] == 1
        assert entry["environment"]["Variables"]["OSCAR_SD_ROOT_PATH"] == (
            f"/system/services/{entry['name']}/exposed")


def test_the_command_line_shares_the_service_as_asked(
        double: ClusterDouble, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    import os
    import sys

    from oscar_sd.cli import EXIT_OK, EXIT_USAGE, main

    for name in list(os.environ):
        if name.upper().startswith("OSCAR_SD_") or name == "oscar_endpoint":
            monkeypatch.delenv(name)
    monkeypatch.setattr(sys, "stdin", open(os.devnull))
    token = double.sign_in("alice")["access_token"]
    argv = ["deploy", "--endpoint", double.oscar_endpoint, "--token", token, "--fdl", str(JOB_FDL)]

    assert main([*argv, "--visibility", "restricted", "--allowed-users", "bob, carol"]) == EXIT_OK
    definition = double.runner.services["stable-diffusion"].definition
    assert (definition["visibility"], definition["allowed_users"]) == ("restricted",
                                                                      ["bob", "carol"])
    assert "warning:" in capsys.readouterr().err  # the quota, and what restricted users see

    assert main([*argv, "--visibility", "everyone"]) == EXIT_USAGE  # argparse's choices
