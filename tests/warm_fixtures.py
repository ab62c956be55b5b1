"""Warm replicas on the cluster double: in threads, or as ``python -m oscar_sd.service --warm``."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from oscar_sd import OscarSD
from oscar_sd._connect import Connecting
from oscar_sd._storage import StoragePath
from oscar_sd.service.warm import WarmWorker
from oscar_sd.service.warm_config import WarmSettings
from tests.double import ClusterDouble, services

REPO = Path(__file__).resolve().parents[1]
WARM = "stable-diffusion-warm"
INPUT, OUTPUT = f"{WARM}/in", f"{WARM}/out"


def deploy_warm(double: ClusterDouble) -> dict[str, Any]:
    """The warm service as OSCAR holds it: exposed, no ``input``, its folders in variables."""
    return double.deploy({
        "name": WARM,
        "output": [{"storage_provider": "minio.default", "path": OUTPUT}],
        "environment": {"variables": {"OSCAR_SD_INPUT_PATH": INPUT,
                                      "OSCAR_SD_OUTPUT_PATH": OUTPUT}},
        "expose": {"api_port": 8080, "min_scale": 1, "max_scale": 2},
    }, services.fake_generator)  # never called: without input no upload starts a job


@contextmanager
def warm_cluster() -> Iterator[ClusterDouble]:
    """A started double with the warm service deployed."""
    with ClusterDouble() as cluster:
        deploy_warm(cluster)
        yield cluster


def connect_warm(double: ClusterDouble, timeout: float) -> Connecting[OscarSD]:
    """The app's client for the warm service, as the cluster's admin."""
    return OscarSD.connect(endpoint=double.oscar_endpoint, user="oscar", password="oscar-pw",
                           service=WARM, timeout=timeout)


def warm_settings(double: ClusterDouble, replica: str, **changes: Any) -> WarmSettings:
    values: dict[str, Any] = {
        "endpoint": double.minio_endpoint, "access_key": double.minio_access_key,
        "secret_key": double.minio_secret_key, "input_path": StoragePath.parse(INPUT),
        "output_path": StoragePath.parse(OUTPUT), "model": "tiny", "device": "cpu",
        "host": "127.0.0.1", "port": 0, "reconcile_interval": 0.5, "replica": replica,
    }
    values.update(changes)
    return WarmSettings(**values)


def warm_environment(double: ClusterDouble, **changes: str) -> dict[str, str]:
    """The environment of a replica's pod, as the warm FDL and its secrets give it."""
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "OSCAR_SD_MODEL": "tiny", "OSCAR_SD_DEVICE": "cpu",
        "OSCAR_SD_INPUT_PATH": INPUT, "OSCAR_SD_OUTPUT_PATH": OUTPUT,
        "OSCAR_SD_MINIO_ENDPOINT": double.minio_endpoint,
        "OSCAR_SD_MINIO_ACCESS_KEY": double.minio_access_key,
        "OSCAR_SD_MINIO_SECRET_KEY": double.minio_secret_key,
        "OSCAR_SD_FUNCTION_CONFIG": "/nonexistent/function_config.yaml",
        "OSCAR_SD_PORT": "0", "OSCAR_SD_RECONCILE_INTERVAL": "0.5",
    }
    env.pop("FUNCTION_CONFIG", None)
    env.update(changes)
    return env


def start_replica_process(double: ClusterDouble, **changes: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "oscar_sd.service", "--warm"],
                            env=warm_environment(double, **changes), cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


class LogWatch:
    """Reads a replica process's log in a thread; waits for a line holding some text."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(process,), daemon=True)
        self._thread.start()

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()

    def wait_for(self, text: str, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: any(text in line for line in self.lines),
                                       timeout)

    @property
    def text(self) -> str:
        with self._cond:
            return "".join(self.lines)


class ThreadReplica:
    """A :class:`WarmWorker` serving in a daemon thread."""

    def __init__(self, settings: WarmSettings) -> None:
        self.worker = WarmWorker(settings)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._serve, name=settings.replica, daemon=True)

    def _serve(self) -> None:
        try:
            self.worker.serve()
        except BaseException as exc:  # the test reports it
            self.error = exc
            self.worker.ready.set()

    def __enter__(self) -> ThreadReplica:
        self.thread.start()
        assert self.worker.ready.wait(120), "the replica did not get ready"
        assert self.error is None, self.error
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.worker.request_stop()
        self.thread.join(30)
        assert not self.thread.is_alive(), "the replica did not stop"


class ResultLog:
    """Counts the objects written under the warm output folder, per key (the double's hook)."""

    def __init__(self, double: ClusterDouble) -> None:
        self.written: Counter[str] = Counter()
        self._cond = threading.Condition()
        double.on_object_created = self._created

    def _created(self, bucket: str, key: str, when: float) -> None:
        with self._cond:
            self.written[key] += 1
            self._cond.notify_all()

    def wait_for(self, key: str, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self.written[key] > 0, timeout)

    def wait_for_suffix(self, suffix: str, timeout: float) -> str | None:
        """The first key written that ends in ``suffix``, once there is one."""
        with self._cond:
            found = self._cond.wait_for(
                lambda: next((k for k in self.written if k.endswith(suffix)), None), timeout)
            return found or None

    def results(self) -> Counter[str]:
        with self._cond:
            return Counter({key: n for key, n in self.written.items()
                            if key.endswith((".zip", ".error.json"))})
