"""The command line's grammar: subcommands, options and their checks."""

from __future__ import annotations

import argparse
from pathlib import Path

from .._deploy import (
    DEFAULT_DEPLOY_WAIT,
)
from .._deploy_prepare import VISIBILITIES
from ._commands import run_deploy, run_generate, run_serve, run_status
from ._common import DEFAULT_FDL, EXIT_CODES_HELP
from ._doctor import run_doctor
from ._warm import add_warm_parser


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
        "--image", type=Path, metavar="FILE",
        help="image to image: start from this picture (PNG, JPEG or WebP, at most 4 MiB), "
        "resized to --size",
    )
    generate.add_argument(
        "--strength", type=float, metavar="S",
        help="with --image: how much of it is redrawn, above 0 up to 1 (default: the "
        "model's, 0.75; 0.5 for turbo models)",
    )
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
        "--pair", action="store_true",
        help="deploy the per-job and the warm service as one spill-over pair "
        "(manifests/stable-diffusion.yaml, then manifests/stable-diffusion-warm.yaml), "
        "before any --fdl",
    )
    deploy.add_argument(
        "--wait", type=float, default=DEFAULT_DEPLOY_WAIT, metavar="SECONDS",
        help=f"how long to wait for the cluster to list it (default {DEFAULT_DEPLOY_WAIT:g})",
    )
    deploy.add_argument(
        "--visibility", choices=VISIBILITIES,
        help="who may use the service (with --token: you own it): private (only you), "
        "restricted (you and --allowed-users), public (every user of the cluster); "
        "default: the FDL's, else OSCAR's private",
    )
    deploy.add_argument(
        "--allowed-users", metavar="ID,ID", help="user ids (EGI ePUIDs) of a restricted service",
    )
    deploy.add_argument(
        "--use-root-keys", action="store_true",
        help="with the admin password, accept that a service taking MinIO keys from its "
        "secrets (the warm one) gets MinIO's root keys, which reach every bucket",
    )
    deploy.set_defaults(run=run_deploy)

    check = commands.add_parser(
        "doctor", parents=[cluster, account, output],
        help="check that people can use the service (the operator's checklist)",
        epilog="exit codes: 0 people can use it, 2 usage or credentials, 3 a check failed",
        description="Check, as this identity, everything people need: the cluster answers, "
        "its version and the FDL shape it takes, sign-in, the service and its buckets, "
        "notifications, conditional PUTs, the quota, GPUs, a warm service's health, and "
        "one test request end to end. Each line is ✔ or ✘ with the fix.",
    )
    check.add_argument("--json", action="store_true", help="print JSON instead of text")
    check.add_argument("--no-request", action="store_true",
                       help="do not send the test request")
    check.add_argument("--request-timeout", type=float, default=300.0, metavar="SECONDS",
                       help="how long the test request may take (default 300)")
    check.set_defaults(run=run_doctor)

    status = commands.add_parser(
        "status", parents=[cluster, account, output], help="show the service and its recent jobs",
        epilog=EXIT_CODES_HELP,
    )
    status.add_argument("--jobs", type=int, default=10, metavar="N", help="jobs shown (default 10)")
    status.add_argument("--json", action="store_true", help="print JSON instead of text")
    status.set_defaults(run=run_status)

    add_warm_parser(commands, [cluster, account, output], EXIT_CODES_HELP)
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
