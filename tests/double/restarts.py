"""MinIO restarting again and again, as on a cluster where people keep deploying.

OSCAR restarts MinIO on every service create and delete (grycap/oscar
``pkg/handlers/create.go`` and ``delete.go``, ``RestartServer`` in
``pkg/utils/minio.go``). :class:`RestartLoop` does what one restart does
(``LoopbackServer.restart``) every ``every`` seconds until stopped.
"""

from __future__ import annotations

import threading
from collections.abc import Callable


class RestartLoop:
    """Restart every ``every`` seconds, each refusing connections for ``refuse_for``."""

    def __init__(self, restart: Callable[[float], threading.Thread], *,
                 every: float = 0.5, refuse_for: float = 0.1) -> None:
        if refuse_for >= every:
            raise ValueError("refuse_for must be shorter than every")
        self._restart = restart
        self.every = every
        self.refuse_for = refuse_for
        self.count = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="double-restarts", daemon=True)

    def __enter__(self) -> RestartLoop:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop restarting; returns once the last restart listens again."""
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.every - self.refuse_for):
            self._restart(self.refuse_for).join()  # back before the next one starts
            self.count += 1
