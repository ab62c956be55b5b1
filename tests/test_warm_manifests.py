"""The warm service's and the app's FDLs: valid OSCAR services, deployable together.

Follows tests/test_service_manifest.py: each FDL's service, as oscar-cli sends
it (script inlined), validates against OSCAR's Service schema
(tests/data/oscar-api.yaml), and its fields are all known to the schema.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from openapi_schema_validator import OAS30Validator

from oscar_sd._deploy import load_fdl_service
from oscar_sd._service_paths import service_paths
from oscar_sd._settings import Settings
from oscar_sd.cli import EXIT_OK, main
from tests.double import ClusterDouble

REPO = Path(__file__).resolve().parents[1]
WARM_FDL = REPO / "manifests" / "stable-diffusion-warm.yaml"
APP_FDL = REPO / "manifests" / "app.yaml"
SPEC = yaml.safe_load((REPO / "tests" / "data" / "oscar-api.yaml").read_text())


def fdl_entry(path: Path) -> dict[str, Any]:
    (cluster,) = yaml.safe_load(path.read_text())["functions"]["oscar"]
    (entry,) = cluster.values()
    return entry


@pytest.mark.parametrize("fdl", [WARM_FDL, APP_FDL], ids=["warm", "app"])
def test_the_fdl_is_a_valid_oscar_service(fdl: Path) -> None:
    schema = SPEC["components"]["schemas"]["Service"]
    definition = load_fdl_service(fdl)
    OAS30Validator({**schema, "components": SPEC["components"]}).validate(definition)
    assert set(fdl_entry(fdl)) <= set(schema["properties"])
    # ExposeSettings of OSCAR 3.6.5 plus health_path (OSCAR v4 docs/fdl.md).
    known = set(SPEC["components"]["schemas"]["ExposeSettings"]["properties"]) | {"health_path"}
    assert set(definition["expose"]) <= known
    script = (fdl.parent / fdl_entry(fdl)["script"])
    assert os.access(script, os.X_OK) and "exec " in script.read_text()


def test_the_warm_service_starts_no_job_per_upload_and_names_its_folders() -> None:
    entry = fdl_entry(WARM_FDL)
    variables = entry["environment"]["Variables"]
    assert "input" not in entry  # no per-upload job
    assert entry["expose"]["min_scale"] >= 1 and entry["enable_gpu"] is True
    assert str(entry["expose"]["api_port"]) == variables["OSCAR_SD_PORT"]
    assert entry["expose"]["health_path"] == "/health"
    assert [o["path"] for o in entry["output"]] == [variables["OSCAR_SD_OUTPUT_PATH"]]
    input_path, output_path = service_paths(load_fdl_service(WARM_FDL))
    assert input_path.bucket == output_path.bucket  # OSCAR makes the output's bucket
    # No key in the repository: empty secrets that `oscar-sd deploy` fills.
    assert entry["environment"]["secrets"] == {"OSCAR_SD_MINIO_ACCESS_KEY": "",
                                               "OSCAR_SD_MINIO_SECRET_KEY": ""}


def test_the_app_is_exposed_on_port_7000_and_uses_the_warm_service() -> None:
    entry = fdl_entry(APP_FDL)
    assert entry["expose"]["api_port"] == 7000
    assert entry["expose"]["min_scale"] == entry["expose"]["max_scale"] == 1  # no affinity
    assert entry["environment"]["Variables"]["port"] == "7000"
    assert entry["environment"]["Variables"]["OSCAR_SD_SERVICE"] == fdl_entry(WARM_FDL)["name"]
    assert "secrets" not in entry["environment"]


def test_the_app_serves_under_oscars_base_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OSCAR_SD_ROOT_PATH", raising=False)
    monkeypatch.setenv("OSCAR_SERVICE_BASE_PATH", "/system/services/oscar-sd/exposed")
    assert Settings().root_path == "/system/services/oscar-sd/exposed"
    monkeypatch.setenv("OSCAR_SERVICE_BASE_PATH", "/")  # DNS routing: no prefix
    assert Settings().root_path == ""
    monkeypatch.setenv("OSCAR_SD_ROOT_PATH", "/sd/")  # the app's own setting wins
    assert Settings().root_path == "/sd"


def test_one_deploy_puts_both_on_the_cluster_with_the_accounts_minio_keys(
    cluster: ClusterDouble, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    for name in list(os.environ):
        if name.upper().startswith("OSCAR_SD_") or name in ("oscar_endpoint", "port"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("oscar_endpoint", cluster.oscar_endpoint)
    monkeypatch.setenv("OSCAR_SD_USER", "oscar")
    monkeypatch.setenv("OSCAR_SD_PASSWORD", "oscar-pw")
    monkeypatch.setattr(sys, "stdin", open(os.devnull))

    assert main(["deploy", "--fdl", str(WARM_FDL), "--fdl", str(APP_FDL),
                 "--use-root-keys"]) == EXIT_OK

    out, err = capsys.readouterr()
    assert "holds MinIO's root keys" in err  # said, since the admin's keys are the root keys
    assert "created service stable-diffusion-warm" in out and "created service oscar-sd" in out
    assert cluster.minio_secret_key not in out + err
    warm = cluster.runner.services["stable-diffusion-warm"].definition
    assert warm["environment"]["secrets"] == {
        "OSCAR_SD_MINIO_ACCESS_KEY": cluster.minio_access_key,
        "OSCAR_SD_MINIO_SECRET_KEY": cluster.minio_secret_key}
    listed = requests.get(f"{cluster.oscar_endpoint}/system/services/oscar-sd",
                          auth=("oscar", "oscar-pw"), timeout=10).json()
    assert listed["expose"]["api_port"] == [7000]  # the double plays OSCAR v4.1.2
