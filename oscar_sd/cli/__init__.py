"""The ``oscar-sd`` command line.

    oscar-sd serve                       the web page (what `make run` starts)
    oscar-sd generate "a red fox" -n 6   images on the cluster, or in-process without one
    oscar-sd deploy                      create or update the service from its FDL
    oscar-sd status                      the service and its recent jobs
    oscar-sd doctor                      the operator's checklist: can people use it?

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

import sys
from collections.abc import Sequence

from .._deploy import FDLError
from .._deploy_prepare import DeployRefused
from .._errors import AuthenticationError, InvalidRequestError, OscarSDError
from ._commands import run_serve
from ._common import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, UsageError
from ._output import describe, report, terminal_output
from ._parser import build_parser

__all__ = ["EXIT_FAILURE", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "build_parser", "main"]


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
        with terminal_output(verbose=args.verbose):
            return args.run(args, secrets)
    except KeyboardInterrupt:
        print("oscar-sd: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (UsageError, InvalidRequestError, FDLError, DeployRefused,
            AuthenticationError) as exc:
        report(describe(exc), secrets)
        return EXIT_USAGE
    except OscarSDError as exc:
        report(describe(exc), secrets)
        return EXIT_FAILURE
