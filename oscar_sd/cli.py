"""The ``oscar-sd`` command line.

    oscar-sd serve                       the web page (what `make run` starts)
    oscar-sd generate "a red fox" -n 6   images on the cluster, or in-process without one
    oscar-sd deploy                      create or update the service from its FDL
    oscar-sd status                      the service and its recent jobs

The cluster is ``--endpoint`` or the ``oscar_endpoint`` variable. The account
is ``--user`` / ``OSCAR_SD_USER`` with the password from ``OSCAR_SD_PASSWORD``
or asked for at the terminal (never echoed), or a bearer token from
``--token`` / ``OSCAR_SD_TOKEN``, renewed with ``OSCAR_SD_REFRESH_TOKEN`` (at
``OSCAR_SD_TOKEN_ENDPOINT`` for client ``OSCAR_SD_OIDC_CLIENT_ID``) when set.

Exit codes: 0 done, 2 usage or credentials, 3 cluster or job failure,
130 interrupted (Ctrl-C).

A normal run prints the command's own lines only; ``-v`` adds the log of the
library and of the libraries under it (diffusers, transformers, torch, ...).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import getpass
import json
import logging
import os
import shutil
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TextIO

import anyio
from pydantic import ValidationError

from ._deploy import (
    DEFAULT_DEPLOY_WAIT,
    DeployedService,
    FDLError,
    ServiceStatus,
    deploy_service,
    service_status,
)
from ._errors import (
    AuthenticationError,
    ClusterUnreachableError,
    GenerationTimeout,
    InvalidRequestError,
    OscarSDError,
)
from ._models import GenerationRequest, GenerationResult, Progress
from ._settings import Settings
from ._tokens import OidcToken

EXIT_OK = 0
EXIT_USAGE = 2  # also argparse's own code for a bad command line
EXIT_FAILURE = 3
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = (
    "exit codes: 0 done, 2 usage or credentials, 3 cluster or job failure, "
    "130 interrupted (Ctrl-C)"
)

#: Libraries whose log a normal run keeps to errors (``-v`` shows it all).
NOISY_LIBRARIES = ("diffusers", "transformers", "huggingface_hub", "torch", "PIL", "urllib3",
                   "minio", "httpx", "filelock")

DEFAULT_FDL = Path("manifests") / "stable-diffusion.yaml"

#: The command-line option behind each field of a generation request, for error messages.
REQUEST_OPTIONS = {
    "prompt": "the prompt",
    "negative_prompt": "--negative",
    "seed": "--seed",
    "steps": "--steps",
    "guidance_scale": "--guidance",
    "width": "--size",
    "height": "--size",
    "num_images": "-n",
}


class UsageError(Exception):
    """The command line or the environment is missing something; exit code 2."""


# ---------------------------------------------------------------------------
# Entry point


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code (the console script exits with it)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse has printed usage (code 2) or help (code 0)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE

    secrets: list[str] = []  # whatever must never reach the terminal, filled as read
    try:
        if args.run is run_serve:  # the web app sets up its own logging
            return args.run(args, secrets)
        with _terminal_output(verbose=args.verbose):
            return args.run(args, secrets)
    except KeyboardInterrupt:
        print("oscar-sd: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (UsageError, InvalidRequestError, FDLError, AuthenticationError) as exc:
        _report(_describe(exc), secrets)
        return EXIT_USAGE
    except OscarSDError as exc:
        _report(_describe(exc), secrets)
        return EXIT_FAILURE


@contextlib.contextmanager
def _terminal_output(*, verbose: bool) -> Iterator[None]:
    """What reaches the terminal while a command runs.

    oscar-sd's own warnings come as ``oscar-sd: ...`` lines. The libraries
    under it (torch, diffusers, transformers, urllib3, ...) and Python's
    warnings stay quiet unless ``verbose``, which shows everything from INFO up.
    transformers and diffusers read their level from the environment once, at
    import, hence the variables; everything is put back when the command ends.
    """
    if not logging.getLogger().handlers:
        logging.basicConfig(format="oscar-sd: %(name)s: %(message)s")
    root = logging.getLogger()
    loggers = [root, *(logging.getLogger(name) for name in NOISY_LIBRARIES)]
    levels = [logger.level for logger in loggers]
    variables = {"TRANSFORMERS_VERBOSITY": "error", "DIFFUSERS_VERBOSITY": "error",
                 "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1"}
    saved = {name: os.environ.get(name) for name in variables}
    with warnings.catch_warnings():
        if verbose:
            root.setLevel(logging.INFO)
        else:
            root.setLevel(logging.WARNING)
            for logger in loggers[1:]:
                logger.setLevel(logging.ERROR)
            for name, value in variables.items():
                os.environ.setdefault(name, value)
            warnings.simplefilter("ignore")
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels, strict=True):
                logger.setLevel(level)
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


def _describe(exc: Exception) -> str:
    """The error as one sentence, with what to do about it."""
    if isinstance(exc, InvalidRequestError):
        return f"{REQUEST_OPTIONS.get(exc.field, exc.field)}: {exc.problem}"
    message = str(exc)
    if isinstance(exc, AuthenticationError):
        message += (
            " (the user comes from --user or OSCAR_SD_USER, the password from "
            "OSCAR_SD_PASSWORD or the prompt, a token from --token or OSCAR_SD_TOKEN)"
        )
    elif isinstance(exc, ClusterUnreachableError):
        message += " (the endpoint comes from --endpoint or the oscar_endpoint variable)"
    return message


def _report(message: str, secrets: list[str]) -> None:
    """Print one error line on stderr. Secrets are masked should one slip into a message."""
    for secret in secrets:
        message = message.replace(secret, "***")
    print(f"oscar-sd: error: {' '.join(message.split())}", file=sys.stderr)


# ---------------------------------------------------------------------------
# The command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="oscar-sd",
        description="Text-to-image with Stable Diffusion on an OSCAR cluster.",
        epilog=EXIT_CODES_HELP,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    output = argparse.ArgumentParser(add_help=False)
    output.add_argument(
        "-v", "--verbose", action="store_true",
        help="also show the log and warnings of the libraries (diffusers, torch, ...)",
    )

    cluster = argparse.ArgumentParser(add_help=False)
    cluster.add_argument(
        "--endpoint", help="OSCAR cluster URL (default: the oscar_endpoint variable)"
    )
    cluster.add_argument(
        "--service",
        help="name of the Stable Diffusion service (default: OSCAR_SD_SERVICE or "
        "stable-diffusion)",
    )
    cluster.add_argument(
        "--insecure",
        action="store_true",
        help="do not verify the cluster's TLS certificate (self-signed test clusters)",
    )

    account = argparse.ArgumentParser(add_help=False)
    account.add_argument("--user", help="OSCAR user (default: OSCAR_SD_USER)")
    account.add_argument(
        "--token",
        help="OIDC bearer token instead of user and password (safer: OSCAR_SD_TOKEN, "
        "which other users of the machine cannot see)",
    )

    serve = commands.add_parser(
        "serve", parents=[cluster, output], help="serve the web page", epilog=EXIT_CODES_HELP,
        description="Serve the web page: on the cluster when an endpoint is set, "
        "else with the embedded local backend.",
    )
    serve.add_argument("--port", type=_port, help="port to listen on (default: port or 7000)")
    serve.add_argument("--host", help="address to bind (default: OSCAR_SD_HOST or 0.0.0.0)")
    serve.set_defaults(run=run_serve)

    generate = commands.add_parser(
        "generate", parents=[cluster, account, output], help="generate images from a prompt",
        epilog=EXIT_CODES_HELP,
        description="Generate images from a prompt. Progress goes to stderr, the paths of "
        "the images to stdout, one per line. Without an endpoint the images are made "
        "in-process.",
    )
    generate.add_argument("prompt", help="what the images should show")
    generate.add_argument(
        "-n", "--num-images", type=int, default=6, metavar="N", help="how many (default 6)"
    )
    generate.add_argument("--seed", type=int, help="seed, for reproducible images")
    generate.add_argument("--steps", type=int, help="denoising steps (default: the model's)")
    generate.add_argument("--guidance", type=float, help="guidance scale (default: the model's)")
    generate.add_argument(
        "--size", type=_size, default=(512, 512), metavar="WxH", help="image size (default 512x512)"
    )
    generate.add_argument("--negative", default="", metavar="TEXT", help="what to avoid")
    generate.add_argument(
        "-o", "--output", type=Path, metavar="DIR",
        help="where to copy the images (default: ./outputs/<job id>/, new for each run); "
        "a folder that already holds files is refused unless --force",
    )
    generate.add_argument(
        "--force", action="store_true",
        help="write into a -o folder that already holds files, replacing same-named ones",
    )
    generate.add_argument(
        "--timeout", type=float, metavar="SECONDS",
        help="seconds to wait for the images (default: OSCAR_SD_TIMEOUT or 900)",
    )
    generate.set_defaults(run=run_generate)

    deploy = commands.add_parser(
        "deploy", parents=[cluster, account, output],
        help="create or update the service on the cluster", epilog=EXIT_CODES_HELP,
        description="Create the service of an FDL file on the cluster, or update it when it "
        "exists, then wait until the cluster lists it.",
    )
    deploy.add_argument(
        "--fdl", type=Path, action="append",
        help=f"FDL file of the service (default: {DEFAULT_FDL}); give it again for more "
        "services, e.g. --fdl manifests/stable-diffusion-warm.yaml --fdl manifests/app.yaml",
    )
    deploy.add_argument(
        "--wait", type=float, default=DEFAULT_DEPLOY_WAIT, metavar="SECONDS",
        help=f"how long to wait for the cluster to list it (default {DEFAULT_DEPLOY_WAIT:g})",
    )
    deploy.set_defaults(run=run_deploy)

    status = commands.add_parser(
        "status", parents=[cluster, account, output], help="show the service and its recent jobs",
        epilog=EXIT_CODES_HELP,
    )
    status.add_argument("--jobs", type=int, default=10, metavar="N", help="jobs shown (default 10)")
    status.add_argument("--json", action="store_true", help="print JSON instead of text")
    status.set_defaults(run=run_status)
    return parser


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is between 1 and 65535, not {port}")
    return port


def _size(text: str) -> tuple[int, int]:
    """``512x768`` as (width, height); a single number is a square."""
    width, _, height = text.lower().partition("x")
    try:
        return int(width), int(height or width)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected WIDTHxHEIGHT such as 512x768, not {text!r}"
        ) from None


# ---------------------------------------------------------------------------
# Settings and credentials


@dataclass(frozen=True)
class Cluster:
    """Where to connect and as whom, resolved from options, environment and prompt."""

    endpoint: str
    service: str
    verify_ssl: bool
    user: str | None = None
    # Kept out of repr() so that no debug print or traceback shows them.
    password: str | None = field(default=None, repr=False)
    token: str | OidcToken | None = field(default=None, repr=False)

    def credentials(self) -> dict[str, Any]:
        return {"user": self.user, "password": self.password, "token": self.token}


def load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        error = exc.errors()[0]
        name = ".".join(str(part) for part in error["loc"])
        raise UsageError(
            f"the setting {name} from the environment is invalid: {error['msg']}"
        ) from None


def resolve_cluster(
    args: argparse.Namespace, settings: Settings, secrets: list[str], *, required: bool
) -> Cluster | None:
    """The cluster and account to use; None when no endpoint is set and none is ``required``."""
    endpoint = (args.endpoint or settings.oscar_endpoint).strip()
    if not endpoint:
        if required:
            raise UsageError(
                "no OSCAR cluster given: pass --endpoint URL or set the oscar_endpoint variable"
            )
        return None
    if not endpoint.startswith(("http://", "https://")):
        raise UsageError(f"the endpoint must be an http:// or https:// URL, not {endpoint!r}")

    place = {
        "endpoint": endpoint.rstrip("/"),
        "service": args.service or settings.service,
        "verify_ssl": settings.verify_ssl and not args.insecure,
    }
    token = args.token or os.environ.get("OSCAR_SD_TOKEN")
    refresh_token = os.environ.get("OSCAR_SD_REFRESH_TOKEN")
    if refresh_token:
        secrets.append(refresh_token)
        if token:
            secrets.append(token)
        if not settings.oidc_client_id:
            raise UsageError(
                "OSCAR_SD_REFRESH_TOKEN needs the client it was issued to: set "
                "OSCAR_SD_OIDC_CLIENT_ID (and OSCAR_SD_OIDC_CLIENT_SECRET if it has one)"
            )
        client_secret = settings.oidc_client_secret.get_secret_value() or None
        if client_secret:
            secrets.append(client_secret)
        renewing = OidcToken(
            token or "",
            refresh_token=refresh_token,
            # Without an access token: renew at once.
            expires_at=None if token else 0.0,
            token_endpoint=settings.default_token_endpoint(),
            client_id=settings.oidc_client_id,
            client_secret=client_secret,
            verify_ssl=place["verify_ssl"],
        )
        return Cluster(**place, token=renewing)
    if token:
        secrets.append(token)
        return Cluster(**place, token=token)

    interactive = sys.stdin.isatty()
    user = args.user or os.environ.get("OSCAR_SD_USER")
    if not user and interactive:
        user = input(f"OSCAR user at {place['endpoint']}: ").strip()
    if not user:
        raise UsageError(
            "no OSCAR user: pass --user or set OSCAR_SD_USER (or give a token in OSCAR_SD_TOKEN)"
        )
    password = os.environ.get("OSCAR_SD_PASSWORD")
    if password is None and interactive:
        password = getpass.getpass(f"Password of {user} at {place['endpoint']}: ")
    if not password:
        raise UsageError(
            f"no password for {user}: set OSCAR_SD_PASSWORD, or run in a terminal to be asked"
        )
    secrets.append(password)
    return Cluster(**place, user=user, password=password)


# ---------------------------------------------------------------------------
# serve


def run_serve(args: argparse.Namespace, secrets: list[str]) -> int:
    settings = load_settings()
    overrides: dict[str, Any] = {"port": args.port, "host": args.host,
                                 "oscar_endpoint": args.endpoint, "service": args.service}
    if args.insecure:
        overrides["verify_ssl"] = False
    settings = settings.model_copy(
        update={name: value for name, value in overrides.items() if value is not None}
    )
    # Gradio is imported here only: the library and the other commands never load it.
    from . import ui

    ui.serve(settings)
    return EXIT_OK


# ---------------------------------------------------------------------------
# generate


class ProgressPrinter:
    """Prints each new stage (and step) of a request on one line of stderr."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self._last: tuple[Any, ...] | None = None

    def __call__(self, progress: Progress) -> None:
        shown = (progress.stage, progress.message, progress.step, progress.queue_position)
        if shown == self._last:
            return
        self._last = shown
        # The backends' messages already say the step and the place in the queue.
        print(f"[{progress.elapsed:6.1f}s] {progress.stage.value}: {progress.message}",
              file=self.stream)
        self.stream.flush()


def run_generate(args: argparse.Namespace, secrets: list[str]) -> int:
    settings = load_settings()
    width, height = args.size
    request = GenerationRequest(
        prompt=args.prompt,
        negative_prompt=args.negative,
        seed=args.seed,
        steps=args.steps,
        guidance_scale=args.guidance,
        width=width,
        height=height,
        num_images=args.num_images,
    )
    timeout = args.timeout if args.timeout is not None else settings.timeout
    if not timeout > 0:
        raise UsageError("--timeout must be a number of seconds above 0")
    # Make sure the images can be kept before a GPU spends time on them.
    _make_folder(args.output or Path("outputs"))
    if args.output is not None and not args.force:
        _refuse_a_used_folder(args.output)
    cluster = resolve_cluster(args, settings, secrets, required=False)
    where = f"service {cluster.service!r} at {cluster.endpoint}" if cluster else "this machine"
    print(f"oscar-sd: generating {request.num_images} images on {where}", file=sys.stderr)

    result = anyio.run(_generate, request, cluster, settings, timeout, ProgressPrinter())
    directory = args.output or Path("outputs") / result.job_id
    try:
        _make_folder(directory)
        for image in result.images:
            copy = directory / image.name
            # "x": never replace a file, even one that appeared since the check above.
            with image.open("rb") as source, copy.open("wb" if args.force else "xb") as target:
                shutil.copyfileobj(source, target)
            print(copy)
    except FileExistsError as exc:
        raise UsageError(
            f"{exc.filename} already exists and was kept: pass --force to replace it"
        ) from None
    except OSError as exc:
        raise UsageError(f"cannot write the images to {directory}: {exc.strerror}") from None
    finally:
        result.cleanup()  # the backend's own temporary copy
    print(f"oscar-sd: seed {result.request.seed}, {len(result.images)} images in {directory}",
          file=sys.stderr)
    return EXIT_OK


def _refuse_a_used_folder(directory: Path) -> None:
    """An earlier run's files are never overwritten silently."""
    try:
        used = any(directory.iterdir())
    except OSError as exc:
        raise UsageError(f"cannot write the images to {directory}: {exc.strerror}") from None
    if used:
        raise UsageError(
            f"{directory} already holds files (an earlier run's?): choose another folder "
            "with -o, or pass --force to write into it, replacing files of the same name"
        )


def _make_folder(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot write the images to {directory}: {exc.strerror}") from None


async def _generate(
    request: GenerationRequest,
    cluster: Cluster | None,
    settings: Settings,
    limit_seconds: float,
    on_progress: ProgressPrinter,
) -> GenerationResult:
    results_dir = settings.results_dir or None
    if cluster is not None:
        from ._oscar import OscarSD

        async with OscarSD.connect(
            cluster.endpoint,
            **cluster.credentials(),
            service=cluster.service,
            verify_ssl=cluster.verify_ssl,
            timeout=limit_seconds,
            results_dir=results_dir,
        ) as sd:
            return await sd.generate(request, on_progress=on_progress)

    # No cluster: the same service worker, in this process.
    from ._local import LocalSD

    try:
        with anyio.fail_after(limit_seconds):
            async with LocalSD(model=settings.model, results_dir=results_dir) as local:
                return await local.generate(request, on_progress=on_progress)
    except TimeoutError:
        raise GenerationTimeout(
            f"The images were not ready within {limit_seconds:g} s."
        ) from None


# ---------------------------------------------------------------------------
# deploy


def run_deploy(args: argparse.Namespace, secrets: list[str]) -> int:
    settings = load_settings()
    if not args.wait > 0:
        raise UsageError("--wait must be a number of seconds above 0")
    fdls: list[Path] = args.fdl or [DEFAULT_FDL]
    for fdl in fdls:
        if not fdl.is_file():
            raise UsageError(f"no FDL file at {fdl}: pass --fdl with the path of one")
    cluster = resolve_cluster(args, settings, secrets, required=True)
    assert cluster is not None
    for fdl in fdls:
        print(f"oscar-sd: deploying {fdl} to {cluster.endpoint}", file=sys.stderr)
        started = time.monotonic()
        deployed: DeployedService = anyio.run(
            partial(
                deploy_service,
                cluster.endpoint,
                fdl_path=fdl,
                **cluster.credentials(),
                # Only a --service given here picks the FDL entry; the environment's
                # OSCAR_SD_SERVICE names what the app uses, not what the file holds.
                service=args.service,
                verify_ssl=cluster.verify_ssl,
                wait_seconds=args.wait,
                on_progress=_say,
            )
        )
        action = "created" if deployed.created else "updated"
        print(f"{action} service {deployed.name} on {cluster.endpoint} "
              f"({time.monotonic() - started:.1f} s)")
    return EXIT_OK


def _say(message: str) -> None:
    """A progress line on stderr, so that stdout keeps only the result."""
    print(f"oscar-sd: {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# status


def run_status(args: argparse.Namespace, secrets: list[str]) -> int:
    settings = load_settings()
    if args.jobs < 0:
        raise UsageError("--jobs must be 0 or more")
    cluster = resolve_cluster(args, settings, secrets, required=True)
    assert cluster is not None
    status: ServiceStatus = anyio.run(
        lambda: service_status(
            cluster.endpoint,
            **cluster.credentials(),
            service=cluster.service,
            verify_ssl=cluster.verify_ssl,
            recent=args.jobs,
        )
    )
    if args.json:
        print(json.dumps({"endpoint": cluster.endpoint, **dataclasses.asdict(status)}, indent=2))
    else:
        print(format_status(status, cluster.endpoint))
    return EXIT_OK


def format_status(status: ServiceStatus, endpoint: str) -> str:
    lines = [
        f"service  {status.name} at {endpoint}",
        f"image    {status.image}",
        f"gpu      {'yes' if status.gpu else 'no'}"
        f"{f'   cpu {status.cpu}' if status.cpu else ''}"
        f"{f'   memory {status.memory}' if status.memory else ''}",
        f"input    {', '.join(status.inputs) or '-'}",
        f"output   {', '.join(status.outputs) or '-'}",
    ]
    if not status.total_jobs:
        lines.append("jobs     none yet")
        return "\n".join(lines)
    shown = f", the latest {len(status.jobs)} below" if len(status.jobs) < status.total_jobs else ""
    lines.append(f"jobs     {status.total_jobs}{shown}")
    width = max(len(job.name) for job in status.jobs) if status.jobs else 0
    for job in status.jobs:
        times = "  ".join(
            f"{label} {value}"
            for label, value in (
                ("created", job.creation_time),
                ("started", job.start_time),
                ("finished", job.finish_time),
            )
            if value
        )
        lines.append(f"  {job.name:<{width}}  {job.status:<9}  {times}".rstrip())
    return "\n".join(lines)
