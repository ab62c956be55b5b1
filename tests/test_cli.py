"""The `oscar-sd` command line against the cluster double.

Most tests run ``main([...])`` in-process (the double serves on loopback
threads); one runs the installed console script as a subprocess to check the
real exit code and output streams.
"""

from __future__ import annotations

import getpass
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import requests

from oscar_sd._deploy import load_fdl_service
from oscar_sd._models import Progress, Stage
from oscar_sd.cli import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, main
from oscar_sd.cli._commands import ProgressPrinter
from tests.double import ClusterDouble

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PASSWORD = "oscar-pw"  # the cluster's one basic-auth account, tests.conftest.ADMIN
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No setting leaks in from the machine; stdin is not a terminal; cwd is a temp folder."""
    for name in list(os.environ):
        if name.upper().startswith("OSCAR_SD_") or name in ("oscar_endpoint", "port"):
            monkeypatch.delenv(name)
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def alice(monkeypatch: pytest.MonkeyPatch, cluster: ClusterDouble) -> ClusterDouble:
    """The cluster double, with alice's account in the environment as a user would set it."""
    monkeypatch.setenv("oscar_endpoint", cluster.oscar_endpoint)
    monkeypatch.setenv("OSCAR_SD_USER", "oscar")
    monkeypatch.setenv("OSCAR_SD_PASSWORD", PASSWORD)
    return cluster


def error_line(err: str) -> str:
    """The one error line the command printed."""
    lines = [line for line in err.splitlines() if line.startswith("oscar-sd: error: ")]
    assert len(lines) == 1, err
    return lines[0]


def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def write_fdl(directory: Path, *, name: str, image: str, memory: str = "2Gi") -> Path:
    """An FDL as oscar-cli reads it: the script beside it, named relative to it."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "script.sh").write_text("#!/bin/sh\necho generating for $INPUT_FILE_PATH\n")
    fdl = directory / "service.yaml"
    fdl.write_text(textwrap.dedent(f"""\
        functions:
          oscar:
          - some-other-cluster:
              name: {name}
              image: {image}
              memory: {memory}
              cpu: 2
              enable_gpu: true
              script: script.sh
              input:
              - storage_provider: minio.default
                path: {name}/in
              output:
              - storage_provider: minio.default
                path: {name}/out
        """))
    return fdl


def read_service(cluster: ClusterDouble, name: str) -> dict:
    response = requests.get(
        f"{cluster.oscar_endpoint}/system/services/{name}", auth=("oscar", PASSWORD), timeout=10
    )
    response.raise_for_status()
    return response.json()


# ---------------------------------------------------------------------------
# generate


def test_generate_writes_six_pngs_and_prints_their_paths(alice, capsys, tmp_path):
    code = main(["generate", "a lighthouse at dusk", "--seed", "42"])

    out, err = capsys.readouterr()
    assert code == EXIT_OK, err
    paths = [Path(line) for line in out.splitlines()]
    assert len(paths) == 6
    # Default folder: ./outputs/<job id>/, one folder per request.
    assert {path.parent for path in paths} == {paths[0].parent}
    assert paths[0].parent.parent == Path("outputs")
    for path in paths:
        assert (tmp_path / path).read_bytes().startswith(PNG_SIGNATURE)
    # Progress goes to stderr, with the stage and the seconds elapsed.
    assert "waiting" in err and "done" in err and "s]" in err
    assert "seed 42" in err
    # The images came from a job the cluster ran for this service.
    assert [job.status for job in alice.jobs("stable-diffusion").values()] == ["Succeeded"]


def test_generate_into_a_chosen_folder_with_options(alice, capsys, tmp_path):
    target = tmp_path / "fox"
    code = main([
        "generate", "a red fox", "-n", "2", "--size", "256x128", "--steps", "4",
        "--guidance", "1.5", "--negative", "blurry", "-o", str(target),
    ])

    out, err = capsys.readouterr()
    assert code == EXIT_OK, err
    assert out.splitlines() == [str(target / "1.png"), str(target / "2.png")]
    assert sorted(p.name for p in target.iterdir()) == ["1.png", "2.png"]


def test_o_never_overwrites_an_earlier_runs_files(alice, capsys, tmp_path):
    target = tmp_path / "pictures"
    assert main(["generate", "a red fox", "-n", "2", "-o", str(target)]) == EXIT_OK
    first = {path.name: path.read_bytes() for path in target.iterdir()}
    capsys.readouterr()

    code = main(["generate", "a blue whale", "-n", "2", "-o", str(target)])

    assert code == EXIT_USAGE
    line = error_line(capsys.readouterr().err)
    assert str(target) in line and "--force" in line
    assert {path.name: path.read_bytes() for path in target.iterdir()} == first
    assert len(alice.jobs("stable-diffusion")) == 1  # refused before any GPU time was spent

    assert main(["generate", "a blue whale", "-n", "2", "-o", str(target), "--force"]) == EXIT_OK
    replaced = {path.name: path.read_bytes() for path in target.iterdir()}
    assert replaced.keys() == first.keys() and replaced != first


def run_cli(*argv: str, cwd: Path, extra_env: dict[str, str]) -> subprocess.CompletedProcess:
    """The command line of this checkout in a process of its own, as a person runs it."""
    environment = {
        **{k: v for k, v in os.environ.items()
           if not k.upper().startswith("OSCAR_SD_") and k != "oscar_endpoint"},
        "PYTHONPATH": str(ROOT),
        **extra_env,
    }
    return subprocess.run(
        [sys.executable, "-c", "import sys; from oscar_sd.cli import main; sys.exit(main())",
         *argv],
        capture_output=True, text=True, env=environment, cwd=cwd, stdin=subprocess.DEVNULL,
        timeout=240,
    )


def test_library_warnings_stay_out_of_a_normal_run(tmp_path):
    argv = ("generate", "a fox", "-n", "1", "--size", "64x64", "--steps", "2")
    ours = re.compile(r"^(oscar-sd: |\[\s*\d+\.\d+s\] )")

    quiet = run_cli(*argv, "-o", "quiet", cwd=tmp_path, extra_env={"OSCAR_SD_MODEL": "tiny"})

    assert quiet.returncode == EXIT_OK, quiet.stderr
    foreign = [line for line in quiet.stderr.splitlines() if not ours.match(line)]
    assert foreign == [], "lines a normal run should not print"
    assert "Loading model" not in quiet.stderr

    loud = run_cli(*argv, "-o", "loud", "-v", cwd=tmp_path, extra_env={"OSCAR_SD_MODEL": "tiny"})

    assert loud.returncode == EXIT_OK, loud.stderr
    assert "Loading model tiny" in loud.stderr  # -v shows the library's own log


def test_generate_via_the_console_script(cluster, tmp_path):
    script = shutil.which("oscar-sd", path=str(Path(sys.executable).parent))
    assert script, "the oscar-sd console script is not installed (pip install -e .)"
    environment = {
        **{k: v for k, v in os.environ.items() if not k.upper().startswith("OSCAR_SD_")},
        "OSCAR_SD_USER": "oscar",
        "OSCAR_SD_PASSWORD": PASSWORD,
    }
    done = subprocess.run(
        [script, "generate", "a lighthouse", "--endpoint", cluster.oscar_endpoint,
         "-o", str(tmp_path / "out")],
        capture_output=True, text=True, env=environment, stdin=subprocess.DEVNULL, timeout=120,
    )
    assert done.returncode == EXIT_OK, done.stderr
    paths = done.stdout.split()
    assert len(paths) == 6
    assert all(Path(path).read_bytes().startswith(PNG_SIGNATURE) for path in paths)
    assert PASSWORD not in done.stdout + done.stderr


def test_an_output_folder_that_cannot_be_written_exits_2(alice, capsys, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")

    code = main(["generate", "a fox", "-n", "1", "-o", str(blocker / "images")])

    out, err = capsys.readouterr()
    assert code == EXIT_USAGE
    assert out == ""
    assert str(blocker / "images") in error_line(err)
    assert alice.jobs("stable-diffusion") == {}  # refused before any GPU time was spent


def test_without_an_endpoint_the_images_are_made_in_process(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("OSCAR_SD_MODEL", "tiny")  # random weights: quick, and no download

    code = main(["generate", "a fox", "-n", "2", "--size", "64x64", "--steps", "2"])

    out, err = capsys.readouterr()
    assert code == EXIT_OK, err
    paths = [tmp_path / line for line in out.splitlines()]
    assert len(paths) == 2
    assert all(path.read_bytes().startswith(PNG_SIGNATURE) for path in paths)
    assert "generating 2 images on this machine" in err
    assert "2 images in" in err


def test_image_to_image_from_a_file_with_a_strength(monkeypatch, capsys, tmp_path):
    from PIL import Image

    monkeypatch.setenv("OSCAR_SD_MODEL", "tiny")
    Image.new("RGB", (96, 64), (200, 40, 30)).save(tmp_path / "start.jpg")

    code = main(["generate", "a fox", "-n", "1", "--size", "64x64", "--steps", "4",
                 "--image", "start.jpg", "--strength", "0.5"])

    out, err = capsys.readouterr()
    assert code == EXIT_OK, err
    with Image.open(tmp_path / out.strip()) as made:
        assert made.size == (64, 64)
        assert "Denoising strength: 0.5" in made.text["parameters"]
    assert main(["generate", "a fox", "--strength", "0.5"]) == EXIT_USAGE
    assert "--strength goes with --image" in error_line(capsys.readouterr().err)
    assert main(["generate", "a fox", "--image", "missing.png"]) == EXIT_USAGE
    assert "missing.png: no such file" in error_line(capsys.readouterr().err)


def test_one_image_is_said_in_the_singular(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("OSCAR_SD_MODEL", "tiny")

    code = main(["generate", "a fox", "-n", "1", "--size", "64x64", "--steps", "2"])

    err = capsys.readouterr().err
    assert code == EXIT_OK, err
    assert "generating 1 image on this machine" in err
    assert "done: 1 image in" in err and "1 images" not in err and "image(s)" not in err


def test_on_a_terminal_the_stage_line_counts_the_seconds() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    printer = ProgressPrinter(terminal)
    printer(Progress(Stage.WAITING, "Waiting for a GPU", elapsed=1.0))
    printer._began -= 5  # as if 5 s went by: the timer says so when it ticks
    printer.tick()
    printer(Progress(Stage.DOWNLOADING, "Downloading the images", elapsed=7.0))
    printer.finish()
    lines = terminal.getvalue().split("\n")
    # The waiting line was redrawn in place (\r) with the later time, then ended.
    assert lines[0].endswith("[   6.0s] waiting: Waiting for a GPU")
    assert lines[0].count("\r") == 2
    assert lines[1].endswith("[   7.0s] downloading: Downloading the images")
    # Piped, each line comes once, whole, with no control characters.
    piped = io.StringIO()
    printer = ProgressPrinter(piped)
    printer(Progress(Stage.WAITING, "Waiting for a GPU", elapsed=1.0))
    printer.tick()
    assert piped.getvalue() == "[   1.0s] waiting: Waiting for a GPU\n"


def test_a_failed_job_exits_3(alice, capsys):
    alice.fail_next_job("the GPU ran out of memory")

    code = main(["generate", "a lighthouse"])

    out, err = capsys.readouterr()
    assert code == EXIT_FAILURE
    assert out == ""
    assert "the GPU ran out of memory" in error_line(err)


def test_a_job_that_never_finishes_times_out_with_exit_3(alice, capsys):
    alice.hold_jobs()
    try:
        code = main(["generate", "a lighthouse", "--timeout", "1"])
    finally:
        alice.release_jobs()

    out, err = capsys.readouterr()
    assert code == EXIT_FAILURE
    assert out == ""
    error_line(err)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["generate", "fox", "-n", "0"], "-n: must be between 1 and 8"),
        (["generate", "fox", "--seed", "-1"], "--seed: must be between"),
        (["generate", "fox", "--size", "100x100"], "--size: must be a multiple of 8"),
        (["generate", "   "], "the prompt is empty: type what the images should show"),
    ],
)
def test_an_invalid_request_exits_2_naming_the_option(alice, capsys, argv, expected):
    assert main(argv) == EXIT_USAGE
    assert expected in error_line(capsys.readouterr().err)
    assert alice.jobs("stable-diffusion") == {}


# ---------------------------------------------------------------------------
# credentials


@pytest.mark.parametrize("command", [["generate", "a fox"], ["status"], ["deploy"]])
def test_bad_credentials_exit_2_with_a_clear_message_and_no_secret(
    alice, monkeypatch, capsys, tmp_path, command
):
    wrong = "not-the-password-5f1c"
    monkeypatch.setenv("OSCAR_SD_PASSWORD", wrong)
    fdl = write_fdl(tmp_path / "fdl", name="sd-bad", image="example/sd:1")
    argv = [*command, "--fdl", str(fdl)] if command == ["deploy"] else command

    code = main(argv)

    out, err = capsys.readouterr()
    assert code == EXIT_USAGE
    line = error_line(err)
    assert "refused the credentials" in line and "OSCAR_SD_PASSWORD" in line
    assert wrong not in out + err
    assert PASSWORD not in out + err
    assert "sd-bad" not in [svc for svc in alice.runner.services]


def test_a_bearer_token_from_the_environment_is_used(oidc_cluster, monkeypatch, capsys):
    token = oidc_cluster.sign_in("alice@egi.eu")["access_token"]
    monkeypatch.setenv("oscar_endpoint", oidc_cluster.oscar_endpoint)
    monkeypatch.setenv("OSCAR_SD_TOKEN", token)

    assert main(["status"]) == EXIT_OK
    assert "stable-diffusion" in capsys.readouterr().out

    monkeypatch.setenv("OSCAR_SD_TOKEN", "a-wrong-token-77aa")
    assert main(["status"]) == EXIT_USAGE
    out, err = capsys.readouterr()
    assert "refused the credentials" in error_line(err)
    assert "a-wrong-token-77aa" not in out + err


def test_a_refresh_token_from_the_environment_is_renewed_and_never_printed(
    oidc_cluster, oidc_provider, monkeypatch, capsys
):
    answer = oidc_cluster.sign_in("alice@egi.eu")
    monkeypatch.setenv("oscar_endpoint", oidc_cluster.oscar_endpoint)
    monkeypatch.delenv("OSCAR_SD_TOKEN", raising=False)
    monkeypatch.setenv("OSCAR_SD_REFRESH_TOKEN", answer["refresh_token"])
    monkeypatch.setenv("OSCAR_SD_TOKEN_ENDPOINT", oidc_provider.token_endpoint)
    monkeypatch.setenv("OSCAR_SD_OIDC_CLIENT_ID", "oscar-sd-tests")
    monkeypatch.setenv("OSCAR_SD_OIDC_CLIENT_SECRET", "secret")

    assert main(["status"]) == EXIT_OK  # no access token given: one was asked for
    out, err = capsys.readouterr()
    assert "stable-diffusion" in out
    assert answer["refresh_token"] not in out + err

    oidc_provider.revoke("alice@egi.eu")
    monkeypatch.setenv("OSCAR_SD_REFRESH_TOKEN", answer["refresh_token"])
    assert main(["status"]) == EXIT_USAGE
    assert "Your sign-in has expired" in error_line(capsys.readouterr().err)


def test_without_a_password_and_no_terminal_exit_2(alice, monkeypatch, capsys):
    monkeypatch.delenv("OSCAR_SD_PASSWORD")
    monkeypatch.setattr(getpass, "getpass", lambda prompt: pytest.fail("prompted"))

    assert main(["status"]) == EXIT_USAGE
    line = error_line(capsys.readouterr().err)
    assert "no password" in line and "OSCAR_SD_PASSWORD" in line


def test_at_a_terminal_the_password_is_asked_for_and_never_shown(alice, monkeypatch, capsys):
    monkeypatch.delenv("OSCAR_SD_PASSWORD")
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
    prompts: list[str] = []

    def fake_getpass(prompt: str) -> str:
        prompts.append(prompt)
        return PASSWORD

    monkeypatch.setattr(getpass, "getpass", fake_getpass)

    assert main(["status"]) == EXIT_OK
    out, err = capsys.readouterr()
    assert prompts == [f"Password of oscar at {alice.oscar_endpoint}: "]
    assert PASSWORD not in out + err


def test_without_a_user_exit_2(alice, monkeypatch, capsys):
    monkeypatch.delenv("OSCAR_SD_USER")
    assert main(["status"]) == EXIT_USAGE
    assert "--user" in error_line(capsys.readouterr().err)


# ---------------------------------------------------------------------------
# cluster failures


@pytest.mark.parametrize("command", [["generate", "a fox"], ["status"], ["deploy"]])
def test_an_unreachable_endpoint_exits_3(alice, capsys, tmp_path, command):
    fdl = write_fdl(tmp_path / "fdl", name="sd-x", image="example/sd:1")
    argv = [*command, "--endpoint", closed_port_url()]
    if command == ["deploy"]:
        argv += ["--fdl", str(fdl)]

    code = main(argv)

    out, err = capsys.readouterr()
    assert code == EXIT_FAILURE
    assert "reach" in error_line(err) and "--endpoint" in error_line(err)
    assert PASSWORD not in out + err


@pytest.mark.parametrize("command", [["generate", "a fox"], ["status"]])
def test_a_missing_service_exits_3_and_says_what_exists(alice, capsys, command):
    code = main([*command, "--service", "no-such-service"])

    line = error_line(capsys.readouterr().err)
    assert code == EXIT_FAILURE
    assert "no-such-service" in line and "stable-diffusion" in line


# ---------------------------------------------------------------------------
# deploy and status


def test_deploy_creates_the_service_then_a_second_deploy_updates_it(alice, capsys, tmp_path):
    fdl = write_fdl(tmp_path / "fdl", name="sd-test", image="example/sd:1", memory="2Gi")

    assert main(["deploy", "--fdl", str(fdl)]) == EXIT_OK
    out, err = capsys.readouterr()
    assert out.startswith("created service sd-test"), err
    created = read_service(alice, "sd-test")
    assert created["image"] == "example/sd:1"
    assert created["memory"] == "2Gi"
    assert created["cpu"] == "2"  # OSCAR wants a string
    assert created["enable_gpu"] is True
    # The script travels inline, read relative to the FDL.
    assert created["script"] == (tmp_path / "fdl" / "script.sh").read_text()
    assert [io["path"] for io in created["input"]] == ["sd-test/in"]

    write_fdl(tmp_path / "fdl", name="sd-test", image="example/sd:2", memory="8Gi")
    assert main(["deploy", "--fdl", str(fdl)]) == EXIT_OK
    out, err = capsys.readouterr()
    assert out.startswith("updated service sd-test"), err
    updated = read_service(alice, "sd-test")
    assert (updated["image"], updated["memory"]) == ("example/sd:2", "8Gi")
    # Updating keeps the service's identity (OSCAR keeps its token).
    assert updated["token"] == created["token"]


def test_a_deployed_service_generates_and_shows_in_status(alice, capsys, tmp_path):
    fdl = write_fdl(tmp_path / "fdl", name="sd-new", image="example/sd:1")
    assert main(["deploy", "--fdl", str(fdl)]) == EXIT_OK
    assert main(["generate", "a fox", "-n", "3", "--service", "sd-new"]) == EXIT_OK
    capsys.readouterr()

    assert main(["status", "--service", "sd-new"]) == EXIT_OK

    out = capsys.readouterr().out
    assert "service  sd-new" in out
    assert "image    example/sd:1" in out
    assert "gpu      yes" in out
    assert "input    sd-new/in" in out and "output   sd-new/out" in out
    (job_name,) = alice.jobs("sd-new")
    assert job_name in out and "Succeeded" in out


def test_deploy_says_what_it_is_waiting_for(alice, capsys, tmp_path):
    fdl = write_fdl(tmp_path / "fdl", name="sd-said", image="example/sd:1")

    assert main(["deploy", "--fdl", str(fdl), "--wait", "30"]) == EXIT_OK

    out, err = capsys.readouterr()
    steps = [line.removeprefix("oscar-sd: ") for line in err.splitlines()]
    assert steps[1:] == [
        "the cluster runs OSCAR v4.1.2",
        f"asking {alice.oscar_endpoint} whether service 'sd-said' exists",
        "creating service 'sd-said' (the cluster restarts its storage for that)",
        "waiting for the cluster to list service 'sd-said' with image example/sd:1 "
        "(up to 30 s)",
        steps[-1],
    ]
    assert re.fullmatch(r"service 'sd-said' is listed \(\d+\.\d s\)", steps[-1])
    assert out.startswith("created service sd-said")  # the result alone on stdout


def test_deploy_that_is_not_listed_in_time_exits_3(alice, capsys, tmp_path):
    fdl = write_fdl(tmp_path / "fdl", name="sd-slow", image="example/sd:1")

    # A deadline far shorter than one request to the cluster: the wait cannot succeed.
    code = main(["deploy", "--fdl", str(fdl), "--wait", "0.000001"])

    assert code == EXIT_FAILURE
    err = capsys.readouterr().err
    assert "waiting for the cluster to list service 'sd-slow' with image example/sd:1" in err
    line = error_line(err)
    assert "did not list it" in line and "oscar-sd status" in line
    assert "sd-slow" in alice.runner.services  # created: only the wait gave up


def test_status_lists_recent_jobs_newest_first_with_their_states(alice, capsys):
    assert main(["generate", "first", "-n", "1"]) == EXIT_OK
    # A failure the service reports fails the request; its job still Succeeded.
    alice.fail_next_job("broken")
    assert main(["generate", "second", "-n", "1"]) == EXIT_FAILURE
    # A killed pod is what makes a Failed job.
    alice.kill_next_job()
    alice.put_object("stable-diffusion", "in/third.txt", b"third")
    for job in alice.jobs("stable-diffusion").values():
        assert job.done.wait(20)
    capsys.readouterr()

    assert main(["status", "--json"]) == EXIT_OK

    status = json.loads(capsys.readouterr().out)
    assert status["name"] == "stable-diffusion"
    assert status["total_jobs"] == 3
    jobs = alice.jobs("stable-diffusion")
    assert {job["name"]: job["status"] for job in status["jobs"]} == {
        name: job.status for name, job in jobs.items()
    }
    assert sorted(job["status"] for job in status["jobs"]) == [
        "Failed", "Succeeded", "Succeeded"
    ]
    created = [job["creation_time"] for job in status["jobs"]]
    assert created == sorted(created, reverse=True)
    assert "token" not in json.dumps(status)

    assert main(["status", "--jobs", "1"]) == EXIT_OK
    assert "jobs     3, the latest 1 below" in capsys.readouterr().out


def test_status_reads_every_page_of_the_job_list(alice, capsys):
    # OSCAR answers 70 jobs a page; 150 jobs take three pages.
    alice.hold_jobs()
    for i in range(150):
        alice.put_object("stable-diffusion", f"in/many{i}.txt", b"a prompt")

    assert main(["status", "--json", "--jobs", "1000"]) == EXIT_OK

    status = json.loads(capsys.readouterr().out)
    assert status["total_jobs"] == 150
    assert sorted(job["name"] for job in status["jobs"]) == sorted(alice.jobs("stable-diffusion"))
    assert main(["status", "--jobs", "5"]) == EXIT_OK
    assert "jobs     150, the latest 5 below" in capsys.readouterr().out


def test_the_project_fdl_deploys_and_the_service_still_generates(alice, capsys):
    """manifests/stable-diffusion.yaml itself: read as oscar-cli reads it, applied, then used."""
    fdl = ROOT / "manifests" / "stable-diffusion.yaml"
    definition = load_fdl_service(fdl)
    assert definition["script"] == (ROOT / "manifests" / "script.sh").read_text()
    assert isinstance(definition["cpu"], str)
    assert definition["enable_gpu"] is True

    # The cluster already has the service (the fixture's): deploy updates it.
    assert main(["deploy", "--fdl", str(fdl)]) == EXIT_OK, capsys.readouterr().err
    assert capsys.readouterr().out.startswith(f"updated service {definition['name']}")
    service = read_service(alice, definition["name"])
    assert service["image"] == definition["image"]
    assert service["script"] == definition["script"]
    assert [io["path"] for io in service["input"]] == [io["path"] for io in definition["input"]]

    assert main(["generate", "a lighthouse", "--service", definition["name"]]) == EXIT_OK
    assert len(capsys.readouterr().out.splitlines()) == 6


# ---------------------------------------------------------------------------
# usage


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], "required"),
        (["paint"], "invalid choice"),
        (["generate"], "prompt"),
        (["generate", "fox", "--size", "big"], "WIDTHxHEIGHT"),
        (["generate", "fox", "-n", "six"], "invalid int value"),
        (["serve", "--port", "70000"], "between 1 and 65535"),
        (["deploy", "--wait", "0"], "--wait"),
        (["generate", "fox", "--timeout", "-5"], "--timeout"),
        (["status", "--jobs", "-1"], "--jobs"),
    ],
)
def test_usage_errors_exit_2(capsys, argv, expected):
    assert main(argv) == EXIT_USAGE
    assert expected in capsys.readouterr().err


def test_deploy_and_status_need_an_endpoint(monkeypatch, capsys):
    monkeypatch.setenv("OSCAR_SD_USER", "oscar")
    monkeypatch.setenv("OSCAR_SD_PASSWORD", PASSWORD)
    for command in (["status"], ["deploy", "--fdl", str(ROOT / "pyproject.toml")]):
        assert main(command) == EXIT_USAGE
        assert "--endpoint" in error_line(capsys.readouterr().err)


def test_an_endpoint_that_is_not_a_url_exits_2(alice, capsys):
    assert main(["status", "--endpoint", "oscar.example.org"]) == EXIT_USAGE
    assert "http" in error_line(capsys.readouterr().err)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "no FDL file"),
        ("functions: [unclosed", "not valid YAML"),
        ("functions:\n  oscar: []\n", "exactly one service"),
        ("functions:\n  oscar:\n  - c:\n      name: x\n      image: y\n      script: gone.sh\n",
         "Cannot read the script"),
    ],
)
def test_a_bad_fdl_exits_2_before_calling_the_cluster(alice, capsys, tmp_path, content, expected):
    fdl = tmp_path / "bad.yaml"
    if content is not None:
        fdl.write_text(content)
    services_before = set(alice.runner.services)

    assert main(["deploy", "--fdl", str(fdl)]) == EXIT_USAGE

    assert expected in error_line(capsys.readouterr().err)
    assert set(alice.runner.services) == services_before


def test_help_exits_0(capsys):
    assert main(["--help"]) == EXIT_OK
    assert "generate" in capsys.readouterr().out


@pytest.mark.parametrize("command", [[], ["serve"], ["generate"], ["deploy"], ["status"]])
def test_help_lists_every_exit_code(capsys, command):
    assert main([*command, "--help"]) == EXIT_OK
    text = " ".join(capsys.readouterr().out.split())
    for code in ("0 done", "2 usage or credentials", "3 cluster or job failure",
                 "130 interrupted (Ctrl-C)"):
        assert code in text


# ---------------------------------------------------------------------------
# serve


def test_serve_hands_the_settings_with_overrides_to_the_ui(monkeypatch):
    import oscar_sd.ui

    seen = []
    monkeypatch.setattr(oscar_sd.ui, "serve", seen.append)
    monkeypatch.setenv("oscar_endpoint", "https://oscar.example.org")
    monkeypatch.setenv("port", "7000")

    assert main(["serve", "--port", "8123", "--host", "127.0.0.1"]) == EXIT_OK

    (settings,) = seen
    assert (settings.port, settings.host) == (8123, "127.0.0.1")
    assert settings.oscar_endpoint == "https://oscar.example.org"


def test_the_library_and_the_cli_do_not_import_gradio():
    code = "import sys, oscar_sd.cli; sys.exit('gradio' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, timeout=60).returncode == 0
