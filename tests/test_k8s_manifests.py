"""manifests/deploy_gradio.yaml: valid Kubernetes, and in agreement with what the app reads.

Validation is offline, with the schemas kubernetes-validate bundles. The
agreement tests read the Deployment's container port, probes and environment
and hold them against oscar_sd.Settings, so renaming a setting or moving the
health check breaks a test here instead of a rollout.
"""

from __future__ import annotations

import copy
import os
import socket
import subprocess
import sys
from pathlib import Path, PurePosixPath
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import latest_version

from oscar_sd import Settings

MANIFEST = Path(__file__).resolve().parents[1] / "manifests" / "deploy_gradio.yaml"
#: Validated against the newest Kubernetes whose schemas kubernetes-validate bundles.
KUBERNETES_VERSION = latest_version()
#: Where the app answers its health check (oscar_sd.ui serves it; the Dockerfile's HEALTHCHECK too).
HEALTH_PATH = "/healthz"
#: Environment variables the container gets that are not oscar_sd settings, and who reads them.
NOT_SETTINGS = {
    "GRADIO_TEMP_DIR": "Gradio: its temp folder, where oscar_sd.ui keeps each session's images",
    "GRADIO_ANALYTICS_ENABLED": "Gradio: no calls home from the cluster",
    "HOME": "everything that writes under ~ (the root filesystem is read-only)",
}


def load_resources() -> list[dict[str, Any]]:
    with MANIFEST.open(encoding="utf-8") as stream:
        return [doc for doc in yaml.safe_load_all(stream) if doc]


def resource(kind: str) -> dict[str, Any]:
    (found,) = [doc for doc in load_resources() if doc["kind"] == kind]
    return found


def app_container() -> dict[str, Any]:
    (container,) = resource("Deployment")["spec"]["template"]["spec"]["containers"]
    return container


def container_env() -> dict[str, str]:
    # Values from a Secret (valueFrom) are the cluster's, not the file's.
    return {entry["name"]: entry["value"] for entry in app_container()["env"] if "value" in entry}


def container_port(port: int | str) -> int:
    """A port reference (number or name) resolved against the container's ports."""
    for declared in app_container()["ports"]:
        if port in (declared["containerPort"], declared.get("name")):
            return declared["containerPort"]
    raise AssertionError(f"the container declares no port {port!r}")


def setting_names() -> dict[str, str]:
    """Every environment variable Settings reads (upper-cased) -> its field name."""
    prefix = Settings.model_config.get("env_prefix", "")
    names = {}
    for field_name, field in Settings.model_fields.items():
        alias = field.validation_alias
        names[(alias if isinstance(alias, str) else prefix + field_name).upper()] = field_name
    return names


# ---------------------------------------------------------------------------
# Validation


def test_the_manifest_holds_a_deployment_a_service_and_an_ingress():
    assert sorted(doc["kind"] for doc in load_resources()) == ["Deployment", "Ingress", "Service"]


@pytest.mark.parametrize("kind", ["Deployment", "Service", "Ingress"])
def test_each_resource_validates_strictly_offline(kind):
    # validate() raises for an invalid resource and for a kind/apiVersion it has
    # no schema for (the command line only warns about the latter).
    kubernetes_validate.validate(resource(kind), KUBERNETES_VERSION, strict=True)


def test_strict_validation_would_catch_a_misspelt_field():
    """The check above has teeth: an unknown field is rejected."""
    deployment = copy.deepcopy(resource("Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_the_kubernetes_validate_command_passes_without_warnings():
    done = subprocess.run(
        [sys.executable, "-m", "kubernetes_validate", "--strict", "-k", KUBERNETES_VERSION,
         str(MANIFEST)],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "WARN" not in done.stdout and "ERROR" not in done.stdout
    assert done.stdout.count("passed") == 3


# ---------------------------------------------------------------------------
# Agreement with the app


def test_the_port_agrees_everywhere():
    default_port = Settings.model_fields["port"].default
    env = container_env()
    assert int(env["port"]) == default_port == 7000
    assert container_port("http") == default_port

    spec = app_container()
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container_port(spec[probe]["httpGet"]["port"]) == default_port, probe

    (service_port,) = resource("Service")["spec"]["ports"]
    assert container_port(service_port["targetPort"]) == default_port
    assert service_port["port"] == 80


def test_the_probes_ask_the_health_check():
    spec = app_container()
    assert spec["readinessProbe"]["httpGet"]["path"] == HEALTH_PATH
    assert spec["livenessProbe"]["httpGet"]["path"] == HEALTH_PATH
    assert spec["startupProbe"]["httpGet"]["path"] == HEALTH_PATH


def test_the_app_started_with_the_manifest_environment_answers_the_probes(
    monkeypatch, tmp_path
):
    """The real web app, configured as the pod is, answers every probe's path with 200."""
    import requests

    from oscar_sd.ui import build_app

    for name in list(os.environ):
        if name.upper() in setting_names():
            monkeypatch.delenv(name)
    for name, value in container_env().items():
        monkeypatch.setenv(name, value)
    # This machine is not the pod: its own free port, and a temp folder of the test's.
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    monkeypatch.setenv("HOME", str(tmp_path))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free_port = probe.getsockname()[1]

    app = build_app(Settings())
    app.launch(server_name="127.0.0.1", server_port=free_port, prevent_thread_lock=True)
    try:
        spec = app_container()
        for probe_name in ("startupProbe", "readinessProbe", "livenessProbe"):
            path = spec[probe_name]["httpGet"]["path"]
            answer = requests.get(f"http://127.0.0.1:{free_port}{path}", timeout=10)
            assert answer.status_code == 200, (probe_name, answer.status_code)
            assert answer.json()["status"] == "ok"
    finally:
        app.close()


def test_every_environment_name_is_one_the_app_or_gradio_reads():
    readable = setting_names()
    for name in container_env():
        assert name.upper() in readable or name in NOT_SETTINGS, (
            f"{name} is neither an oscar_sd setting ({', '.join(sorted(readable))}) "
            "nor a known outside variable"
        )
    # The two historical names are spelt as the app reads them (lower case).
    assert {"oscar_endpoint", "port"} <= set(container_env())


def test_the_settings_read_from_the_manifest_environment(monkeypatch):
    for name in list(os.environ):
        if name.upper() in setting_names():
            monkeypatch.delenv(name)
    for name, value in container_env().items():
        monkeypatch.setenv(name, value)

    settings = Settings()

    env = container_env()
    assert settings.oscar_endpoint == env["oscar_endpoint"]
    assert not settings.local
    assert settings.port == container_port("http")
    assert settings.host == "0.0.0.0"  # reachable through the Service, not only from the pod
    assert settings.service == env["OSCAR_SD_SERVICE"]
    assert settings.timeout == float(env["OSCAR_SD_TIMEOUT"])
    assert settings.verify_ssl is True


def test_everything_the_app_writes_is_on_a_writable_volume():
    pod = resource("Deployment")["spec"]["template"]["spec"]
    spec = app_container()
    assert spec["securityContext"]["readOnlyRootFilesystem"] is True
    empty_dirs = {volume["name"] for volume in pod["volumes"] if "emptyDir" in volume}
    writable = [PurePosixPath(mount["mountPath"]) for mount in spec["volumeMounts"]
                if mount["name"] in empty_dirs and not mount.get("readOnly")]
    env = container_env()
    written = ["GRADIO_TEMP_DIR", "HOME"]
    if "OSCAR_SD_RESULTS_DIR" in env:
        written.append("OSCAR_SD_RESULTS_DIR")
    for name in written:
        path = PurePosixPath(env[name])
        assert any(path == mount or mount in path.parents for mount in writable), name
    assert PurePosixPath("/tmp") in writable  # Python's tempfile default


def test_the_container_runs_as_a_non_root_user_without_privileges():
    pod = resource("Deployment")["spec"]["template"]["spec"]
    context = app_container()["securityContext"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert context["runAsNonRoot"] is True
    assert context["runAsUser"] == pod["securityContext"]["runAsUser"] == 10001
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]
    assert context["seccompProfile"]["type"] == "RuntimeDefault"
    resources = app_container()["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"])
    assert "memory" in resources["limits"]


def test_the_service_selects_the_pods_and_the_ingress_reaches_the_service():
    deployment, service, ingress = (resource(k) for k in ("Deployment", "Service", "Ingress"))
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert service["spec"]["selector"].items() <= pod_labels.items()

    port_names = {port.get("name") for port in service["spec"]["ports"]}
    port_numbers = {port["port"] for port in service["spec"]["ports"]}
    for rule in ingress["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            backend = path["backend"]["service"]
            assert backend["name"] == service["metadata"]["name"]
            assert backend["port"].get("name") in port_names or (
                backend["port"].get("number") in port_numbers
            )


def test_the_ingress_suits_gradio_streams_tls_and_several_replicas():
    ingress = resource("Ingress")
    notes = ingress["metadata"]["annotations"]
    assert ingress["spec"]["ingressClassName"] == "nginx"
    # TLS from cert-manager, covering every host the rules serve.
    assert notes["cert-manager.io/cluster-issuer"]
    tls_hosts = {host for entry in ingress["spec"]["tls"] for host in entry["hosts"]}
    assert {rule["host"] for rule in ingress["spec"]["rules"]} <= tls_hosts
    assert all(entry["secretName"] for entry in ingress["spec"]["tls"])
    # Server-sent events: unbuffered, and long enough for a slow generation.
    assert notes["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
    generation_timeout = Settings.model_fields["timeout"].default
    for name in ("proxy-read-timeout", "proxy-send-timeout"):
        assert int(notes[f"nginx.ingress.kubernetes.io/{name}"]) >= generation_timeout
    assert notes["nginx.ingress.kubernetes.io/proxy-body-size"]
    # Several replicas: a browser sticks to the replica holding its session.
    assert resource("Deployment")["spec"]["replicas"] > 1
    assert notes["nginx.ingress.kubernetes.io/affinity"] == "cookie"
    assert notes["nginx.ingress.kubernetes.io/session-cookie-name"]


# ---------------------------------------------------------------------------
# Memory and disk agree with what the page runs at once

#: What the app takes before any request (Python, Gradio, the clients), rounded up.
APP_BASELINE_MIB = 384
#: Gradio's own temp files (uploads, its caches) and whatever writes under $HOME.
TMP_MARGIN_MIB = 128
UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "K": 10**3, "M": 10**6, "G": 10**9}


def quantity(text: str) -> int:
    """A Kubernetes quantity ("1536Mi", "2Gi", "1000000") in bytes."""
    for unit in sorted(UNITS, key=len, reverse=True):
        if text.endswith(unit):
            return int(text[: -len(unit)]) * UNITS[unit]
    return int(text)


def manifest_settings(monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name, value in container_env().items():
        monkeypatch.setenv(name, value)
    return Settings()


def tmp_volume() -> dict[str, Any]:
    pod = resource("Deployment")["spec"]["template"]["spec"]
    (mount,) = [m for m in app_container()["volumeMounts"] if m["mountPath"] == "/tmp"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    return volume


def test_the_memory_limit_holds_every_request_the_page_runs_at_once(monkeypatch):
    from oscar_sd._storage import MAX_RESULT_BYTES  # a result is held whole while unpacked

    settings = manifest_settings(monkeypatch)
    limit = quantity(app_container()["resources"]["limits"]["memory"])
    needed = APP_BASELINE_MIB * 2**20 + settings.concurrency * MAX_RESULT_BYTES
    assert limit >= needed, (
        f"memory limit {limit / 2**20:.0f} MiB < {needed / 2**20:.0f} MiB for "
        f"{settings.concurrency} requests at once"
    )


def test_the_tmp_volume_holds_the_results_budget_and_the_runs_in_flight(monkeypatch):
    from oscar_sd._unpack import MAX_TOTAL_BYTES  # a run's images, before the budget counts them

    settings = manifest_settings(monkeypatch)
    env = container_env()
    assert "OSCAR_SD_RESULTS_BUDGET_MB" in env and "OSCAR_SD_SESSION_BUDGET_MB" in env
    assert env["GRADIO_TEMP_DIR"].startswith("/tmp/"), "the results live in Gradio's temp folder"
    size = quantity(tmp_volume()["emptyDir"]["sizeLimit"])
    needed = (
        settings.results_budget_mb * 2**20
        + settings.concurrency * MAX_TOTAL_BYTES
        + TMP_MARGIN_MIB * 2**20
    )
    assert size >= needed, f"/tmp holds {size / 2**20:.0f} MiB, needs {needed / 2**20:.0f} MiB"
    assert settings.session_budget_mb <= settings.results_budget_mb
    # The volume counts against the container's ephemeral storage: it must fit in it.
    ephemeral = quantity(app_container()["resources"]["limits"]["ephemeral-storage"])
    assert ephemeral > size
