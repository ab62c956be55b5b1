"""The Dockerfile's `app` target: the web page without the GPU stack, as the manifest runs it."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import yaml

from oscar_sd import Settings

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = (REPO / "Dockerfile").read_text()


def stage(name: str) -> str:
    """The instructions of one build stage."""
    match = re.search(rf"^FROM \S+ AS {name}\n(.*?)(?=^FROM |\Z)", DOCKERFILE, re.S | re.M)
    assert match, f"no stage {name}"
    return match.group(1)


def deployment_container() -> dict:
    documents = list(yaml.safe_load_all((REPO / "manifests" / "deploy_gradio.yaml").read_text()))
    [deployment] = [doc for doc in documents if doc and doc["kind"] == "Deployment"]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    return {"container": container, "pod": deployment["spec"]["template"]["spec"]}


def test_the_app_builds_on_the_shared_base_without_the_generation_stack() -> None:
    app = stage("app")
    assert re.search(r"^FROM base AS app$", DOCKERFILE, re.M)
    installs = re.findall(r"pip install[^\n]*", app)
    assert installs == ["pip install --no-cache-dir . \\"]  # no [local] extra: no torch
    instructions = [line for line in app.splitlines() if not line.startswith("#")]
    assert not any("torch" in line or "local" in line for line in instructions)


def test_the_app_serves_on_the_port_the_settings_and_manifest_use() -> None:
    app = stage("app")
    default_port = Settings.model_fields["port"].default
    assert f"EXPOSE {default_port}" in app
    assert re.search(rf"\bport={default_port}\b", app)
    container = deployment_container()["container"]
    assert [port["containerPort"] for port in container["ports"]] == [default_port]


def test_the_health_check_asks_the_apps_health_route() -> None:
    healthcheck = re.search(r"^HEALTHCHECK .*?CMD (\[.*\])$", stage("app"), re.S | re.M)
    assert healthcheck and "/healthz" in healthcheck.group(1)
    probe = deployment_container()["container"]["readinessProbe"]["httpGet"]["path"]
    assert probe == "/healthz"


def test_the_app_runs_as_the_non_root_user_the_deployment_expects() -> None:
    user = re.search(r"^USER (\d+):(\d+)$", stage("app"), re.M)
    assert user and user.group(1) != "0"
    pod = deployment_container()["pod"]
    context = {
        **pod.get("securityContext", {}),
        **deployment_container()["container"].get("securityContext", {}),
    }
    assert context["runAsUser"] == int(user.group(1))
    assert context.get("runAsNonRoot") is True


def test_the_app_starts_the_web_page() -> None:
    command = re.search(r"^CMD (\[.*\])$", stage("app"), re.M)
    assert command and shlex.split(command.group(1).strip("[]").replace(",", " ")) == [
        "oscar-sd",
        "serve",
    ]
