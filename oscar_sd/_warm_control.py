"""Warm on demand: start the warm service when people are there, stop it when nobody is.

OSCAR v4.1.0 added ``POST /system/services/<name>/stop`` and ``/start`` for
exposed services (grycap/oscar ``main.go``, ``pkg/handlers/lifecycle.go``):
stop scales the Deployment to 0 replicas (its GPUs are freed), start brings
back the count it had. ``GET /system/services/<name>/deployment`` (v4.0.0)
says how many replicas run and whether they are ready.

:class:`WarmControl` starts the service on :meth:`touch` (a sign-in, a page
opened, a request) and stops it once nobody touched it for ``idle_stop``
seconds (default 15 minutes) and nothing is in flight. Until a replica is
ready, :attr:`ready` is False and the spill-over (``_spill.py``) sends requests
to the per-job service. On a cluster without these routes (v3.6, v4.0) nothing
is started or stopped: the warm service keeps its ``min_scale`` replicas, and
they are taken to be ready (v3.6 cannot say otherwise).

>>> control = WarmControl(cluster, "stable-diffusion-warm")   # doctest: +SKIP
>>> async with anyio.create_task_group() as tasks:             # doctest: +SKIP
...     tasks.start_soon(control.run)
...     control.touch()
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import anyio

from ._cluster import OscarCluster
from ._errors import AuthenticationError, OscarSDError
from ._versions import NEWEST_KNOWN, OscarVersion

logger = logging.getLogger("oscar_sd.warm")

DEFAULT_IDLE_STOP = 900.0


@dataclass(frozen=True)
class WarmState:
    """What the cluster says about the warm service's replicas."""

    #: ready, degraded, pending, stopped, failed; "unknown" where the cluster cannot say.
    state: str
    #: Replicas that answer (available), as far as the cluster says.
    ready_replicas: int
    #: Whether this cluster can stop and start the service (OSCAR >= 4.1.0).
    can_stop_start: bool


class WarmControl:
    """Starts and stops one warm service by demand (module docstring)."""

    def __init__(self, cluster: OscarCluster, service: str, *,
                 idle_stop: float = DEFAULT_IDLE_STOP, check_interval: float = 2.0,
                 min_scale: int = 1, busy: Callable[[], bool] = lambda: False) -> None:
        if idle_stop <= 0 or check_interval <= 0:
            raise ValueError("idle_stop and check_interval must be seconds above 0")
        self.cluster = cluster
        self.service = service
        self.idle_stop = idle_stop
        self.check_interval = check_interval
        self.min_scale = min_scale
        #: True while requests are in flight: no idle stop then.
        self.busy = busy
        self.last_seen = time.monotonic()
        self.state = WarmState("unknown", 0, False)
        self.starts = 0
        self.stops = 0
        #: Seconds from the last start to a ready replica, once seen (a pod start and a
        #: model load: what a per-job job of the same image and model pays too).
        self.start_seconds: float | None = None
        self._start_asked: float | None = None
        self._probed = False
        self._can = False
        self._looked_at = -float("inf")
        self._lock = anyio.Lock()
        self._wanted = anyio.Event()
        self._changed = anyio.Event()

    # -- what the front ends call ------------------------------------------------------

    @property
    def ready(self) -> bool:
        """A replica answers: requests may go to the warm service."""
        return self.state.ready_replicas > 0

    def touch(self) -> None:
        """Someone is there (a sign-in, a page, a request): start the service if stopped."""
        self.last_seen = time.monotonic()
        self._wanted.set()

    async def on_demand(self) -> WarmState:
        """:meth:`touch`, then, when the state is older than ``check_interval``, look
        again (and start a stopped service) now: what a request does, so that the
        state is fresh without :meth:`run`. Concurrent callers share one look."""
        self.touch()
        if not self.cluster.can_call or time.monotonic() - self._looked_at < self.check_interval:
            return self.state
        async with self._lock:
            if time.monotonic() - self._looked_at >= self.check_interval:
                try:
                    await self._round()
                except OscarSDError as exc:  # the request goes per-job; the next one retries
                    logger.warning("Warm service %s: %s", self.service, exc)
                    self._looked_at = time.monotonic()
        return self.state

    async def probe(self) -> WarmState:
        """Read the cluster's version once and the service's replicas now."""
        if not self._probed:
            version = OscarVersion.parse((await self.cluster.info()).get("version")) or NEWEST_KNOWN
            self._can = version.can_stop_start
            self._probed = True
        return await self.refresh()

    async def refresh(self) -> WarmState:
        """The replicas as the cluster says now (v3.6: ``min_scale``, taken as ready)."""
        if not self._probed:
            return await self.probe()
        status = await self.cluster.deployment(self.service)
        self._looked_at = time.monotonic()
        if status is None:
            self._set(WarmState("unknown", self.min_scale, self._can))
        else:
            state = str(status.get("state") or "unknown")
            active = int(status.get("active_instances") or 0)
            affected = int(status.get("affected_instances") or 0)
            ready = max(0, active - affected) if state in ("ready", "degraded") else 0
            self._set(WarmState(state, ready, self._can))
        return self.state

    async def start(self) -> WarmState:
        """``POST .../start``; raises OscarSDError where the cluster cannot."""
        await self.probe()
        self._require()
        logger.info("Starting warm service %s", self.service)
        await self.cluster.lifecycle(self.service, "start")
        self.starts += 1
        self._start_asked = time.monotonic()
        return await self.refresh()

    async def stop(self) -> WarmState:
        """``POST .../stop``: its replicas finish what they run and go; GPUs are freed."""
        await self.probe()
        self._require()
        logger.info("Stopping warm service %s", self.service)
        await self.cluster.lifecycle(self.service, "stop")
        self.stops += 1
        return await self.refresh()

    async def wait_changed(self) -> None:
        """Until the next change of :attr:`state`."""
        await self._changed.wait()

    # -- the loop ----------------------------------------------------------------------

    async def run(self) -> None:
        """Start on demand, stop when idle; refresh the replicas' state meanwhile.

        Runs until cancelled. Where the cluster cannot stop and start, it only
        keeps :attr:`state` fresh.
        """
        await self.probe()
        while True:
            try:
                async with self._lock:
                    await self._round()
            except OscarSDError as exc:  # the cluster's API is down: try again later
                logger.warning("Warm service %s: %s", self.service, exc)
            with anyio.move_on_after(self._pause()):
                await self._wanted.wait()

    async def _round(self) -> None:
        state = await self.refresh()
        if not state.can_stop_start:
            self._wanted = anyio.Event()
            return
        idle = time.monotonic() - self.last_seen
        try:
            if self._wanted.is_set():
                self._wanted = anyio.Event()
                if state.state == "stopped":
                    await self.start()
            elif state.state != "stopped" and idle >= self.idle_stop and not self.busy():
                logger.info("Nobody used warm service %s for %.0f s", self.service, idle)
                await self.stop()
        except AuthenticationError as exc:
            # OSCAR lets only a service's owner stop and start it (lifecycle.go,
            # getAuthorizedServiceOwner): this account watches the state only.
            logger.warning("Warm service %s cannot be started or stopped by this account "
                           "(%s): it keeps the replicas it has", self.service, exc)
            self._can = False
            self._set(replace(self.state, can_stop_start=False))

    def _pause(self) -> float:
        """Often while replicas start (to see them ready), else until the idle stop is due
        (a touch wakes the loop at once)."""
        if not self.state.can_stop_start or self.state.state == "stopped":
            return 30.0
        if self.state.state != "ready":
            return self.check_interval
        due = self.last_seen + self.idle_stop - time.monotonic()
        return min(max(self.check_interval, due), 30.0)

    # -- helpers -----------------------------------------------------------------------

    def _set(self, state: WarmState) -> None:
        if state.ready_replicas and self._start_asked is not None:
            self.start_seconds = time.monotonic() - self._start_asked
            self._start_asked = None
        if state != self.state:
            self.state = state
            changed, self._changed = self._changed, anyio.Event()
            changed.set()

    def _require(self) -> None:
        if not self._can:
            raise OscarSDError(
                f"This OSCAR cluster cannot stop and start exposed services (that came with "
                f"OSCAR v4.1.0): warm service {self.service!r} keeps its min_scale replicas. "
                "Change min_scale in its FDL and redeploy to change that."
            )
