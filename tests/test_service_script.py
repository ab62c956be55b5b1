"""``manifests/script.sh`` reports every failure it can catch as ``<job>.error.json`` (issue 9).

faas-supervisor ignores the script's exit code, so a worker that dies before
writing its own error object (python missing, a broken install, killed for
memory) would leave the app waiting for its deadline. Each test makes that
failure happen inside a job of the cluster double and reads what reached the
output folder.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from oscar_sd import GenerationRequest, JobFailedError, OscarSD
from oscar_sd._notify.hub import close_all_hubs
from tests.double import ClusterDouble, ScriptHandler

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "manifests" / "script.sh"
VENV_BIN = str(Path(sys.executable).parent)
REQUEST = GenerationRequest(prompt="a red fox", seed=1, width=64, height=64, num_images=1)


@pytest.fixture
def double() -> Iterator[ClusterDouble]:
    with ClusterDouble(admin=("oscar", "oscar-pw")) as cluster:
        yield cluster
    close_all_hubs()


def run_job(double: ClusterDouble, env: dict[str, str]) -> tuple[dict[str, object], str]:
    """Upload one request to a service running the script under ``env``; its error object."""
    double.add_service("sd-broken", input_path="sd-broken/in", output_path="sd-broken/out",
                       handler=ScriptHandler(SCRIPT, env=env, timeout=240))
    double.put_object("sd-broken", "in/dead01.json", json.dumps(REQUEST.to_payload()).encode())
    (job,) = double.jobs("sd-broken").values()
    assert job.done.wait(240), "the job did not finish"
    # The script failed, yet the job Succeeded: faas-supervisor never reads exit codes.
    assert job.status == "Succeeded"
    assert double.list_keys("sd-broken", "out/") == ["out/dead01.error.json"], job.log
    return json.loads(double.get_object("sd-broken", "out/dead01.error.json")), job.log


def broken_install(tmp_path: Path) -> str:
    """A PYTHONPATH whose ``oscar_sd`` cannot be imported: the worker dies at once."""
    package = tmp_path / "broken" / "oscar_sd"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("raise ImportError('a half-installed image')\n")
    return str(package.parent)


def killed_for_memory(tmp_path: Path) -> str:
    """A PYTHONPATH whose sitecustomize SIGKILLs python, as the OOM killer does."""
    folder = tmp_path / "oom"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(
        "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n")
    return str(folder)


def test_a_worker_that_crashes_on_import_gets_an_error_object(
    tmp_path: Path, double: ClusterDouble
) -> None:
    error, log = run_job(double, {"PATH": f"{VENV_BIN}{os.pathsep}/usr/bin:/bin",
                                  "PYTHONPATH": broken_install(tmp_path)})

    assert error["type"] == "WorkerCrashed" and error["exit_code"] == 1
    assert "exited with code 1 without writing a result" in str(error["error"])
    assert "a half-installed image" in log  # the traceback is in the job's log


def test_a_worker_killed_for_memory_gets_an_error_object(
    tmp_path: Path, double: ClusterDouble
) -> None:
    error, _ = run_job(double, {"PATH": f"{VENV_BIN}{os.pathsep}/usr/bin:/bin",
                                "PYTHONPATH": killed_for_memory(tmp_path)})

    assert error["type"] == "WorkerCrashed" and error["exit_code"] == 137
    assert "killed (signal 9: out of memory" in str(error["error"])


def test_an_image_without_python_gets_an_error_object(
    tmp_path: Path, double: ClusterDouble
) -> None:
    bare = tmp_path / "bin"
    bare.mkdir()
    for tool in ("basename", "printf"):  # what the script needs besides sh's builtins
        target = next(Path(d) / tool for d in ("/usr/bin", "/bin") if (Path(d) / tool).exists())
        (bare / tool).symlink_to(target)

    error, _ = run_job(double, {"PATH": str(bare)})

    assert error["type"] == "WorkerCrashed" and error["exit_code"] == 127
    assert "python could not be started" in str(error["error"])


def test_the_worker_s_own_error_object_is_left_alone(
    tmp_path: Path, double: ClusterDouble
) -> None:
    error, _ = run_job(double, {"PATH": f"{VENV_BIN}{os.pathsep}/usr/bin:/bin",
                                "PYTHONPATH": str(REPO), "OSCAR_SD_MODEL": "/nonexistent"})
    assert error["type"] == "ModelLoadError"


@pytest.mark.anyio
async def test_a_crashed_job_fails_the_request_at_once(
    tmp_path: Path, double: ClusterDouble
) -> None:
    double.add_service("sd-broken", input_path="sd-broken/in", output_path="sd-broken/out",
                       handler=ScriptHandler(SCRIPT, timeout=240, env={
                           "PATH": f"{VENV_BIN}{os.pathsep}/usr/bin:/bin",
                           "PYTHONPATH": killed_for_memory(tmp_path)}))
    with anyio.fail_after(60):  # the request's own deadline is 900 s: this is the point
        async with OscarSD.connect(double.oscar_endpoint, user="oscar", password="oscar-pw",
                                   service="sd-broken") as sd:
            with pytest.raises(JobFailedError) as caught:
                await sd.generate(REQUEST)
    assert caught.value.error_type == "WorkerCrashed"
    assert "out of memory" in str(caught.value)


def test_a_stopped_pod_passes_the_signal_on_and_reports_it(tmp_path: Path) -> None:
    # The pod's SIGTERM reaches the script (not exec'd any more): it must reach the
    # worker too, and the script must still report the stop.
    hold = tmp_path / "hold"
    hold.mkdir()
    ready = tmp_path / "worker-started"
    (hold / "sitecustomize.py").write_text(
        f"import pathlib, time\npathlib.Path({str(ready)!r}).touch()\ntime.sleep(120)\n")
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "in" / "stop01.json").write_text(json.dumps(REQUEST.to_payload()))
    env = {"PATH": f"{VENV_BIN}{os.pathsep}/usr/bin:/bin", "PYTHONPATH": str(hold),
           "INPUT_FILE_PATH": str(tmp_path / "in" / "stop01.json"),
           "TMP_OUTPUT_DIR": str(tmp_path / "out")}
    script = subprocess.Popen(["/bin/sh", str(SCRIPT)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():  # no event to wait on: a file the worker makes
            assert time.monotonic() < deadline, "the worker never started"
            assert script.poll() is None, script.stdout.read() if script.stdout else ""
            time.sleep(0.05)
        script.send_signal(signal.SIGTERM)
        code = script.wait(timeout=20)  # the worker sleeps 120 s unless the signal reached it
    finally:
        script.kill()
    assert code == 128 + signal.SIGTERM
    error = json.loads((tmp_path / "out" / "stop01.error.json").read_text())
    assert error["type"] == "WorkerCrashed" and "stopped by signal 15" in str(error["error"])
