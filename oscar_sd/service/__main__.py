"""``python -m oscar_sd.service``: the command of the OSCAR job (``manifests/script.sh``).

``python -m oscar_sd.service --warm`` (or ``serve``) runs the warm replica
instead: long-running, model loaded once (:mod:`.warm`, settings in
:mod:`.warm_config`); SIGTERM finishes the batch that runs and exits 0.

Environment (set by OSCAR's faas-supervisor, or by hand)::

    INPUT_FILE_PATH   the downloaded input object, <job>.json or <job>.txt
    TMP_OUTPUT_DIR    the folder whose files are uploaded to the output bucket
    OSCAR_SD_MODEL    hub id, folder or "tiny" (default stabilityai/sd-turbo)
    OSCAR_SD_MODEL_NAME  the model's name in the PNG metadata (default OSCAR_SD_MODEL)
    OSCAR_SD_DEVICE   "cuda", "cpu", ... (default: the GPU when there is one)
    OSCAR_SD_LOG_LEVEL  DEBUG, INFO (default), WARNING, ...

Exit codes are listed in :mod:`oscar_sd.service.errors` (0 success, 2 invalid
request, 3 model load, 4 generation, 5 environment, 1 anything else).
``--help`` prints this and the warm replica's settings.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

from .errors import EXIT_ENVIRONMENT, EXIT_INTERNAL
from .job import execute_job

logger = logging.getLogger("oscar_sd.service")


def main(argv: list[str] | None = None) -> int:
    """Run the job the environment describes (or the warm replica); return the exit code."""
    logging.basicConfig(
        level=os.environ.get("OSCAR_SD_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    args = argv or []
    if args and args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if args and args[0] in ("--warm", "serve"):
        return serve_warm()
    if args:
        logger.error("Unknown arguments %s: run with no arguments (one job), --warm, "
                     "or --help", args)
        return EXIT_ENVIRONMENT
    input_path = os.environ.get("INPUT_FILE_PATH", "")
    output_dir = os.environ.get("TMP_OUTPUT_DIR", "")
    if not input_path or not output_dir:
        missing = [
            name
            for name, value in (("INPUT_FILE_PATH", input_path), ("TMP_OUTPUT_DIR", output_dir))
            if not value
        ]
        message = f"{' and '.join(missing)} not set: run this inside an OSCAR job or set them."
        # Without both there is no job name or no folder to report to: the log says why.
        logger.error(message)
        return EXIT_ENVIRONMENT
    try:
        outcome = execute_job(Path(input_path), Path(output_dir))
    except Exception:
        # Writing the error object itself failed (a read-only or missing folder).
        logger.exception("Could not write the job's output to %s", output_dir)
        return EXIT_INTERNAL
    if outcome.load is not None:
        # One machine-readable line: bench/service.py splits a job's start-up with it.
        timings = {"imports": outcome.load.imports, "weights": outcome.load.weights,
                   "to_device": outcome.load.to_device, "generate": outcome.generate_seconds}
        logger.info("Job timings (s): %s", json.dumps({k: round(v, 4) for k, v in timings.items()}))
    return outcome.exit_code


def usage() -> str:
    """The modes and settings of the worker, as ``--help`` prints them: this module's
    and :mod:`.warm_config`'s own descriptions, so they stay what the code reads."""
    from . import warm_config

    job = (__doc__ or "").replace(":mod:", "").replace("``", "")
    warm = (warm_config.__doc__ or "").split("So::", 1)[-1]
    return (
        "usage: python -m oscar_sd.service [--warm | --help]\n\n"
        "Modes:\n"
        "  (no arguments)  run one OSCAR job: read INPUT_FILE_PATH, write TMP_OUTPUT_DIR\n"
        "  --warm, serve   run the warm replica until SIGTERM (an exposed OSCAR service)\n"
        "  --help          print this\n\n"
        f"One job:\n{job}\n"
        f"The warm replica (--warm) reads, besides OSCAR_SD_MODEL and OSCAR_SD_DEVICE:\n{warm}"
    )


def serve_warm() -> int:
    """The warm replica until SIGTERM or SIGINT: 0 after a clean stop."""
    import signal

    from .errors import ConfigurationError
    from .warm import WarmWorker
    from .warm_config import WarmSettings

    try:
        settings = WarmSettings.from_environment()
    except ConfigurationError as exc:
        logger.error("%s", exc)
        return EXIT_ENVIRONMENT
    worker = WarmWorker(settings)

    def stop(signum: int, frame: object) -> None:
        logger.info("Signal %d: finishing the batch that runs, then stopping", signum)
        worker.request_stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        worker.serve()
    except ConfigurationError as exc:  # claims cannot be exclusive with several replicas
        logger.error("%s", exc)
        return EXIT_ENVIRONMENT
    return 0


def exit_now(code: int) -> None:
    """End the process without tearing down its modules, once everything is written.

    A normal exit garbage-collects PyTorch, diffusers and transformers object by
    object: ~1.0 s of CPU per job measured here (``python -c "import
    oscar_sd.service.tiny"``: 4.6 s user with a normal exit, 3.6 s with this).
    The outputs are closed files by now; logs and stdio are flushed first.
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_now(main(sys.argv[1:]))
