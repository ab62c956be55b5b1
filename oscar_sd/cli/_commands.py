"""The commands: serve, generate, deploy, status."""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any, TextIO

import anyio

from .._deploy import (
    DeployedService,
    ServiceStatus,
    deploy_service,
    service_status,
)
from .._errors import (
    GenerationTimeout,
)
from .._models import GenerationRequest, GenerationResult, Progress, count_of
from .._settings import Settings
from ._account import Cluster, load_settings, resolve_cluster
from ._common import DEFAULT_FDL, EXIT_OK, PAIR_FDLS, UsageError


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
    from .. import ui

    ui.serve(settings)
    return EXIT_OK


# ---------------------------------------------------------------------------
# generate


class ProgressPrinter:
    """Prints each new stage (and step) of a request on one line of stderr.

    On a terminal (``live``) the line of the stage that runs is redrawn each
    second (:meth:`tick`), so its timer counts while the cluster waits or runs,
    as the page's does; a file or pipe gets each line once.
    """

    def __init__(self, stream: TextIO | None = None, *, live: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self._last: tuple[Any, ...] | None = None
        self._current: Progress | None = None
        self._began = time.monotonic()  # when elapsed 0 was, by this process's clock

    def __call__(self, progress: Progress) -> None:
        shown = (progress.stage, progress.message, progress.step, progress.queue_position)
        if shown == self._last:
            return
        if self._current is not None and self.live:
            self.stream.write("\n")  # the previous stage's line stays as it ended
        self._last, self._current = shown, progress
        self._began = time.monotonic() - progress.elapsed
        self._draw(progress.elapsed)

    def tick(self) -> None:
        """Redraw the current stage's line with the time now (terminals only)."""
        if self.live and self._current is not None:
            self._draw(time.monotonic() - self._began)

    def finish(self) -> None:
        """End the live line, so that what comes next starts on a line of its own."""
        if self.live and self._current is not None:
            self.stream.write("\n")
            self.stream.flush()
        self._current = None

    def _draw(self, elapsed: float) -> None:
        progress = self._current
        assert progress is not None
        # The backends' messages already say the step and the place in the queue.
        line = f"[{elapsed:6.1f}s] {progress.stage.value}: {progress.message}"
        self.stream.write(f"\r\033[K{line}" if self.live else f"{line}\n")
        self.stream.flush()

    async def keep_ticking(self) -> None:
        """Every second, :meth:`tick`; runs beside the request until it is cancelled."""
        while True:
            await anyio.sleep(1)
            self.tick()


def run_generate(args: argparse.Namespace, secrets: list[str]) -> int:
    settings = load_settings()
    width, height = args.size
    if args.strength is not None and args.image is None:
        raise UsageError("--strength goes with --image (the picture to start from)")
    if args.image is not None and not args.image.is_file():
        raise UsageError(f"--image {args.image}: no such file")
    request = GenerationRequest(
        init_image=args.image,
        strength=args.strength,
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
    print(f"oscar-sd: generating {count_of(request.num_images, 'image')} on {where}",
          file=sys.stderr)

    printer = ProgressPrinter()
    try:
        result = anyio.run(_with_ticks, printer, _generate, request, cluster, settings, timeout)
    finally:
        printer.finish()
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
    print(f"oscar-sd: seed {result.request.seed}, {count_of(len(result.images), 'image')} in "
          f"{directory}", file=sys.stderr)
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


async def _with_ticks(printer: ProgressPrinter, generate: Any, *args: Any) -> GenerationResult:
    """``generate(*args, printer)``, the printer's timer ticking beside it; its error is
    raised as itself (not in an ExceptionGroup), for the exit codes."""
    outcome: list[GenerationResult] = []
    failure: list[Exception] = []
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(printer.keep_ticking)
        try:
            outcome.append(await generate(*args, printer))
        except Exception as exc:
            failure.append(exc)
        finally:
            tasks.cancel_scope.cancel()
    if failure:
        raise failure[0]
    return outcome[0]


async def _generate(
    request: GenerationRequest,
    cluster: Cluster | None,
    settings: Settings,
    limit_seconds: float,
    on_progress: ProgressPrinter,
) -> GenerationResult:
    results_dir = settings.results_dir or None
    if cluster is not None:
        from .._oscar import OscarSD

        async with OscarSD.connect(
            cluster.endpoint,
            **cluster.credentials(),
            service=cluster.service,
            verify_ssl=cluster.verify_ssl,
            timeout=limit_seconds,
            quota_timeout=settings.quota_timeout,
            results_dir=results_dir,
        ) as sd:
            return await sd.generate(request, on_progress=on_progress)

    # No cluster: the same service worker, in this process.
    from .._local import LocalSD

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
    fdls: list[Path] = [*(PAIR_FDLS if args.pair else ()), *(args.fdl or [])]
    fdls = fdls or [DEFAULT_FDL]
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
                visibility=args.visibility,
                allowed_users=_users(args.allowed_users),
                use_root_keys=args.use_root_keys,
            )
        )
        action = "created" if deployed.created else "updated"
        print(f"{action} service {deployed.name} on {cluster.endpoint} "
              f"({time.monotonic() - started:.1f} s)")
    return EXIT_OK


def _users(text: str | None) -> list[str] | None:
    """``--allowed-users a,b`` as a list (EGI ePUIDs hold no commas)."""
    return [user.strip() for user in text.split(",") if user.strip()] if text else None


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
