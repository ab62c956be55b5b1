"""The deployment of the service: the FDL, its script, the Dockerfile and the model folder."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from openapi_schema_validator import OAS30Validator

from oscar_sd import GenerationRequest
from oscar_sd._deploy import load_fdl_service
from oscar_sd.service import generate_images, load_pipeline
from oscar_sd.service.download import download_model
from oscar_sd.service.tiny import build_tiny_pipeline

REPO = Path(__file__).resolve().parents[1]
FDL = REPO / "manifests" / "stable-diffusion.yaml"
SCRIPT = REPO / "manifests" / "script.sh"
DOCKERFILE = REPO / "Dockerfile"
OPENAPI = REPO / "tests" / "data" / "oscar-api.yaml"
HADOLINT = Path(sys.executable).parent / "hadolint"


@pytest.fixture(scope="module")
def fdl_entry() -> dict[str, Any]:
    """The one service entry of the FDL: functions.oscar[0].<cluster id>."""
    document = yaml.safe_load(FDL.read_text())
    clusters = document["functions"]["oscar"]
    assert len(clusters) == 1 and len(clusters[0]) == 1
    (entry,) = clusters[0].values()
    return entry


def test_fdl_entry_is_a_valid_oscar_service(fdl_entry: dict[str, Any]) -> None:
    spec = yaml.safe_load(OPENAPI.read_text())
    service_schema = spec["components"]["schemas"]["Service"]
    # The service as oscar-cli sends it: the script inlined.
    definition = load_fdl_service(FDL)
    OAS30Validator({**service_schema, "components": spec["components"]}).validate(definition)
    # The schema allows unknown fields; a misspelt one would be silently ignored.
    assert set(fdl_entry) <= set(service_schema["properties"])
    assert definition["script"] == SCRIPT.read_text()


class OscarCliError(Exception):
    """What oscar-cli apply would print and stop on."""


def oscar_cli_apply_targets(fdl_path: Path, config: dict[str, Any]) -> dict[str, str]:
    """Service name -> cluster it goes to, resolved as ``oscar-cli apply FDL`` resolves it.

    Follows grycap/oscar-cli: ``service.ReadFDL`` (pkg/service/service.go: each entry of
    ``functions.oscar`` maps a cluster id to a service; the script is read from
    ``filepath.Dir(fdl) + "/" + script``) and ``Config.GetCluster`` (pkg/config/config.go:
    ``default-cluster`` means the config's ``default``, any other id must be a key of
    ``oscar``, else "the cluster %q doesn't exist").
    """
    document = yaml.safe_load(fdl_path.read_text().replace("\r\n", "\n"))
    targets: dict[str, str] = {}
    for element in document["functions"]["oscar"]:
        for cluster_id, service in element.items():
            script = Path(str(fdl_path.parent) + "/" + service["script"])
            if not script.is_file():
                raise OscarCliError(f"cannot load the script {str(script)!r}")
            target = config.get("default", "") if cluster_id == "default-cluster" else cluster_id
            if target not in config["oscar"]:
                raise OscarCliError(f'the cluster "{target}" doesn\'t exist')
            targets[service["name"]] = target
    return targets


def test_oscar_cli_apply_finds_the_cluster_of_the_fdl() -> None:
    # A config as `oscar-cli cluster add my-oscar <endpoint> ...` leaves it: one cluster,
    # the default, under a name the FDL cannot know.
    config = {"oscar": {"my-oscar": {"endpoint": "https://oscar.example.org"}},
              "default": "my-oscar"}
    assert oscar_cli_apply_targets(FDL, config) == {"stable-diffusion": "my-oscar"}
    # The helper does refuse an id oscar-cli would refuse.
    with pytest.raises(OscarCliError, match="doesn't exist"):
        oscar_cli_apply_targets(FDL, {"oscar": {}, "default": ""})


def test_fdl_asks_for_a_gpu_and_separate_in_and_out_folders(fdl_entry: dict[str, Any]) -> None:
    assert fdl_entry["enable_gpu"] is True
    assert fdl_entry["name"] == "stable-diffusion"
    assert fdl_entry["image"] == "ghcr.io/oscar-sd/stable-diffusion:latest"
    (source,) = fdl_entry["input"]
    (sink,) = fdl_entry["output"]
    assert source == {
        "storage_provider": "minio.default",
        "path": "stable-diffusion/in",
    }  # no suffix: it would filter nothing (OSCAR's webhook filters by folder alone)
    assert sink == {"storage_provider": "minio.default", "path": "stable-diffusion/out"}
    # Outputs must never land in the input folder, or each result would start a job.
    assert not (sink["path"] + "/").startswith(source["path"] + "/")
    memory = re.fullmatch(r"(\d+)Gi", fdl_entry["memory"])
    assert memory and int(memory.group(1)) >= 8


def test_fdl_model_is_the_folder_the_image_bakes_in(fdl_entry: dict[str, Any]) -> None:
    variables = fdl_entry["environment"]["Variables"]
    dockerfile = DOCKERFILE.read_text()
    default_model = re.search(r"^ARG OSCAR_SD_MODEL=(\S+)$", dockerfile, re.MULTILINE)
    assert default_model and default_model.group(1) == "stabilityai/sd-turbo"
    assert "ENV OSCAR_SD_MODEL=/opt/models/${OSCAR_SD_MODEL}" in dockerfile
    assert variables["OSCAR_SD_MODEL"] == f"/opt/models/{default_model.group(1)}"
    assert variables["OSCAR_SD_MODEL_NAME"] == default_model.group(1)
    assert variables["HF_HUB_OFFLINE"] == "1"


def run_script(tmp_path: Path, name: str, content: str) -> tuple[int, Path]:
    input_file = tmp_path / "in" / name
    input_file.parent.mkdir()
    input_file.write_text(content)
    out = tmp_path / "out"
    out.mkdir()
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("OSCAR_SD_", "INPUT_", "TMP_"))
    }
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        OSCAR_SD_MODEL="tiny",
        INPUT_FILE_PATH=str(input_file),
        TMP_OUTPUT_DIR=str(out),
    )
    done = subprocess.run(
        [str(SCRIPT)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=240
    )
    return done.returncode, out


def test_script_runs_the_worker_with_the_tiny_model(tmp_path: Path) -> None:
    request = GenerationRequest(prompt="a red fox", seed=5, width=64, height=64, num_images=2)
    code, out = run_script(tmp_path, "d00d.json", json.dumps(request.to_payload()))

    assert code == 0
    assert [p.name for p in out.iterdir()] == ["d00d.zip"]
    with zipfile.ZipFile(out / "d00d.zip") as archive:
        assert archive.namelist() == ["1.png", "2.png"]
        assert archive.read("1.png").startswith(b"\x89PNG")


def test_script_exits_with_the_workers_code(tmp_path: Path) -> None:
    code, out = run_script(tmp_path, "bad.json", json.dumps({"prompt": "x", "width": 100}))

    assert code == 2
    assert json.loads((out / "bad.error.json").read_text())["type"] == "InvalidRequest"


def test_dockerfile_passes_hadolint() -> None:
    done = subprocess.run(
        [str(HADOLINT), str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_dockerfile_has_a_shared_base_and_a_service_target() -> None:
    lines = DOCKERFILE.read_text().splitlines()
    stages = [line.split()[-1] for line in lines if line.startswith("FROM ")]
    assert stages == ["base", "app", "service-deps", "model", "service"]
    assert "FROM base AS service-deps" in lines
    # Every lint exception says why, on the line above.
    for number, line in enumerate(lines):
        if line.startswith("# hadolint ignore="):
            assert lines[number - 1].startswith("#") and "ignore" not in lines[number - 1]
    service = "\n".join(lines[lines.index("FROM service-deps AS service") :])
    assert re.search(r"^USER 1000", service, re.MULTILINE)
    assert 'CMD ["/opt/oscar-sd/script.sh"]' in service


def test_dockerignore_keeps_what_the_build_copies() -> None:
    ignored = {
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv", "tests"} <= ignored
    copy_line = re.compile(r"^COPY (?!--from)(?:--\S+ )*(.+) \S+$", re.MULTILINE)
    copied = copy_line.findall(DOCKERFILE.read_text())
    sources = {source for sources in copied for source in sources.split()}
    assert sources == {"pyproject.toml", "README.md", "oscar_sd", "manifests/script.sh"}
    for source in sources:
        assert source.split("/")[0] not in ignored


def test_downloaded_model_folder_loads_and_generates(tmp_path: Path) -> None:
    # The image's model stage, with a local pipeline standing in for the hub.
    source = tmp_path / "hub-copy"
    build_tiny_pipeline().save_pretrained(source)
    folder = download_model(str(source), tmp_path / "models" / "tiny-turbo")

    loaded = load_pipeline(str(folder), "cpu")
    assert loaded.profile.kind == "turbo"  # a folder named like a turbo model
    request = GenerationRequest(prompt="a red fox", seed=3, width=64, height=64, num_images=1)
    (image,) = generate_images(request, model=str(folder), device="cpu")
    assert image.png.startswith(b"\x89PNG") and "Steps: 1," in image.parameters
