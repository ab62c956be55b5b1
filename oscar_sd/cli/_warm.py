"""``oscar-sd warm start|stop|status|auto``: the warm service's replicas by hand, or by demand.

``auto`` runs the library's :class:`~oscar_sd._warm_control.WarmControl` until
interrupted: it starts the warm service when a request lands in the input
folder of the warm service or of its per-job partner (what the app writes,
whoever clicked), and stops it after ``--idle-stop`` seconds without one. Run
it as the service's owner: OSCAR lets only the owner stop and start it.
"""

from __future__ import annotations

import argparse
import json
import logging
import threading
from functools import partial
from typing import Any

import anyio
import anyio.from_thread

from .._cluster import OscarCluster
from .._notify.records import created_keys, lines
from .._service_paths import first_minio, spill_partner
from .._storage import MinioStorage, StoragePath
from .._warm_control import DEFAULT_IDLE_STOP, WarmControl, WarmState
from ._account import load_settings, resolve_cluster
from ._common import EXIT_OK, UsageError

logger = logging.getLogger("oscar_sd.warm")

DEFAULT_WARM_SERVICE = "stable-diffusion-warm"


def add_warm_parser(commands: Any, parents: list[argparse.ArgumentParser],
                    epilog: str) -> None:
    warm = commands.add_parser(
        "warm", parents=parents, epilog=epilog,
        help="start, stop or show the warm service, or keep it up while people use it",
        description="Start, stop or show the warm service's replicas (OSCAR v4.1 and later "
        "can stop and start an exposed service; older clusters keep its min_scale), or "
        "`auto`: start it when requests come, stop it after --idle-stop seconds without.",
    )
    warm.add_argument("action", choices=("start", "stop", "status", "auto"))
    warm.add_argument(
        "--idle-stop", type=float, metavar="SECONDS",
        help="with auto: stop after this long without a request (default: "
        f"OSCAR_SD_WARM_IDLE_STOP or {DEFAULT_IDLE_STOP:g})",
    )
    warm.add_argument("--json", action="store_true", help="print the state as JSON")
    warm.set_defaults(run=run_warm)


def run_warm(args: argparse.Namespace, secrets: list[str]) -> int:
    settings = load_settings()
    cluster = resolve_cluster(args, settings, secrets, required=True)
    assert cluster is not None
    service = args.service or DEFAULT_WARM_SERVICE
    oscar = OscarCluster(cluster.endpoint, **cluster.credentials(),
                         verify_ssl=cluster.verify_ssl)
    idle_stop = args.idle_stop if args.idle_stop is not None else settings.warm_idle_stop
    if not idle_stop > 0:
        raise UsageError("--idle-stop must be a number of seconds above 0")
    control = WarmControl(oscar, service, idle_stop=idle_stop)

    async def act() -> WarmState:
        if args.action == "start":
            return await control.start()
        if args.action == "stop":
            return await control.stop()
        if args.action == "status":
            return await control.probe()
        await _auto(control, oscar, service, cluster.verify_ssl)
        return control.state

    state = anyio.run(act)
    if args.json:
        print(json.dumps({"service": service, "state": state.state,
                          "ready_replicas": state.ready_replicas,
                          "can_stop_start": state.can_stop_start}))
    else:
        how = "" if state.can_stop_start else " (this cluster cannot stop or start it)"
        print(f"warm service {service}: {state.state}, {state.ready_replicas} "
              f"replica(s) ready{how}")
    return EXIT_OK


async def _auto(control: WarmControl, oscar: OscarCluster, service: str,
                verify_ssl: bool) -> None:
    """Watch the pair's input folders and let the control start and stop the service."""
    definition = await oscar.require_service(service)
    folders = [first_minio(definition, "input")]
    partner = spill_partner(definition)
    if partner:
        folders.append(first_minio(await oscar.require_service(partner), "input"))
    provider = (await oscar.config()).get("minio_provider") or {}
    storage = MinioStorage(provider["endpoint"], provider["access_key"],
                           provider.get("secret_key", ""), region=provider.get("region"),
                           verify=bool(provider.get("verify", True)) and verify_ssl,
                           stall_timeout=60.0)
    stop = threading.Event()
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(control.run)
        for folder in folders:
            watch = partial(_watch, storage, folder, control, stop)
            tasks.start_soon(partial(anyio.to_thread.run_sync, watch, abandon_on_cancel=True))
        try:
            await anyio.sleep_forever()
        finally:
            stop.set()


def _watch(storage: MinioStorage, folder: StoragePath, control: WarmControl,
           stop: threading.Event) -> None:
    """Each object created under ``folder`` is someone asking: touch the control."""
    while not stop.is_set():
        try:
            response = storage.open_listen(folder.bucket, folder.prefix)
            for line in lines(response):
                if created_keys(line):
                    anyio.from_thread.run_sync(control.touch)
                if stop.is_set():
                    return
        except Exception as exc:  # reconnect: MinIO restarts on every deploy
            logger.info("The listen stream on %s dropped (%s)", folder.bucket,
                        type(exc).__name__)
        stop.wait(2.0)
