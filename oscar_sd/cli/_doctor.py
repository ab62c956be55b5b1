"""``oscar-sd doctor``: the operator's checklist before inviting people (``oscar_sd._doctor``)."""

from __future__ import annotations

import argparse
import json

import anyio

from .._doctor import DoctorReport, doctor
from ._account import load_settings, resolve_cluster
from ._common import EXIT_FAILURE, EXIT_OK, UsageError


def run_doctor(args: argparse.Namespace, secrets: list[str]) -> int:
    """Print the checklist (or ``--json``); exit 0 only when people can use the service."""
    settings = load_settings()
    if not args.request_timeout > 0:
        raise UsageError("--request-timeout must be a number of seconds above 0")
    cluster = resolve_cluster(args, settings, secrets, required=True)
    assert cluster is not None
    report: DoctorReport = anyio.run(
        lambda: doctor(
            cluster.endpoint,
            **cluster.credentials(),
            service=cluster.service,
            verify_ssl=cluster.verify_ssl,
            test_request=not args.no_request,
            request_timeout=args.request_timeout,
        )
    )
    text = json.dumps(report.as_dict(), indent=2, ensure_ascii=False) if args.json \
        else report.text()
    for secret in secrets:  # no check quotes a credential; this makes sure of it
        if secret:
            text = text.replace(secret, "***")
    print(text)
    return EXIT_OK if report.ok else EXIT_FAILURE
