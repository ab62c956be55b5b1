"""An exposed service's Deployment in the double: replicas that start, get ready, and stop.

OSCAR runs an exposed service as a Deployment ``<name>-dpl`` of ``min_scale``
pods behind an HPA on CPU (grycap/oscar ``pkg/backends/resources/expose.go``).
Since v4.1.0 (``main.go``; absent at tag v4.0.0) three routes manage it,
``POST /system/services/<name>/stop|start|restart``
(``pkg/handlers/lifecycle.go``): stop sets the Deployment's replicas to 0,
keeping the count it had in the annotation ``oscar.grycap.io/previous-replicas``,
and deletes the HPA; start restores that count (else ``min_scale``, else 1) and
the HPA; restart rolls the pods. Each answers 200 with the Deployment's
``ServiceDeploymentStatus`` (``pkg/types/deployment.go``), as ``GET
/system/services/<name>/deployment`` does since v4.0.0
(``pkg/handlers/deployment.go`` ``deploymentStatusFromDeployment``): state
``stopped`` with 0 replicas wanted, ``ready`` when the available pods reach
the wanted count, ``degraded`` with some, else ``pending``; ``active_instances``
counts the pods that exist.

A pod asks for a GPU when the service has ``enable_gpu`` and the double has a
capacity model: it is Pending until the pool gives it one, then pays the pod
start and the model load, then runs the replica (a :class:`Replica`, e.g. a
WarmWorker) until the Deployment scales it away. The double plays no HPA: a
GPU-bound replica barely uses its CPU, so the count stays what was asked.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable
from typing import Any, Protocol

from .capacity import Capacity


class Replica(Protocol):
    """What runs in a replica's pod: ``serve()`` blocks until ``request_stop()``."""

    ready: threading.Event

    def serve(self) -> None: ...

    def request_stop(self) -> None: ...


ReplicaFactory = Callable[[str], Replica]


class Pod:
    """One replica's pod: GPU (when asked), pod start, model load, then the replica."""

    def __init__(self, name: str, deployment: ExposedDeployment) -> None:
        self.name = name
        self.deployment = deployment
        self.stop = threading.Event()
        self.available = threading.Event()
        self.replica: Replica | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def terminate(self) -> None:
        """SIGTERM: the replica finishes what it runs and exits."""
        self.stop.set()
        capacity = self.deployment.capacity
        if capacity is not None:
            capacity.pool.wake()
        replica = self.replica
        if replica is not None:
            replica.request_stop()

    def _run(self) -> None:
        capacity = self.deployment.capacity
        lease = None
        if capacity is not None and self.deployment.gpu:
            lease = capacity.pool.acquire(self.name, self.stop)
            if lease is None:
                return  # scaled away while Pending
        try:
            if capacity is not None:
                timing = capacity.timing
                if not timing.wait(timing.pod_start, self.stop):
                    return
                if not timing.wait(timing.model_load, self.stop):
                    return
            replica = self.deployment.make_replica(self.name)
            self.replica = replica
            if self.stop.is_set():
                return  # scaled away while starting
            serving = threading.Thread(target=self._serve, args=(replica,),
                                       name=f"{self.name}-serve", daemon=True)
            serving.start()
            replica.ready.wait()
            if self.error is None and not self.stop.is_set():
                self.available.set()
                self.deployment.notify()
            serving.join()
        finally:
            self.available.clear()
            if lease is not None and capacity is not None:
                capacity.pool.release(lease)
            self.deployment.pod_ended(self)

    def _serve(self, replica: Replica) -> None:
        try:
            replica.serve()
        except BaseException as exc:  # the pod crashes: the test sees it in .error
            self.error = exc
            replica.ready.set()


class ExposedDeployment:
    """The replicas of one exposed service, scaled by stop/start/restart."""

    def __init__(self, name: str, definition: dict[str, Any], make_replica: ReplicaFactory,
                 capacity: Capacity | None) -> None:
        expose = definition.get("expose") or {}
        self.name = name
        self.make_replica = make_replica
        self.capacity = capacity
        self.gpu = bool(definition.get("enable_gpu"))
        self.min_scale = int(expose.get("min_scale", 1) or 0)
        self.wanted = self.min_scale
        #: oscar.grycap.io/previous-replicas: the count before the last stop.
        self.previous: int | None = None
        self.pods: list[Pod] = []
        self._lock = threading.Lock()
        self._ended = threading.Condition(self._lock)
        self._scale()

    # -- what the routes do ---------------------------------------------------------

    def stop(self) -> None:
        with self._lock:
            if self.wanted > 0:
                self.previous = self.wanted
            self.wanted = 0
        self._scale()

    def start(self) -> None:
        with self._lock:
            if self.wanted == 0:
                self.wanted = self.previous or self.min_scale or 1
        self._scale()

    def restart(self) -> None:
        with self._lock:
            old = list(self.pods)
        for pod in old:
            pod.terminate()
        self._scale(replace=old)

    def status(self) -> dict[str, Any]:
        """``ServiceDeploymentStatus`` as deploymentStatusFromDeployment builds it."""
        with self._lock:
            wanted = self.wanted
            observed = len(self.pods)
            available = sum(1 for pod in self.pods if pod.available.is_set())
        affected = max(0, observed - available)
        if wanted == 0:
            state, reason = "stopped", "Deployment is stopped."
        elif available >= wanted:
            state, reason = "ready", "Deployment is ready."
        elif available > 0:
            state, reason = "degraded", f"{affected} of {wanted} instances are affected."
        else:
            state, reason = "pending", ""
        answer = {"service_name": self.name, "namespace": "oscar-svc", "state": state,
                  "active_instances": observed, "affected_instances": affected,
                  "resource_kind": "exposed_service"}
        if reason:
            answer["reason"] = reason
        return answer

    # -- pods -----------------------------------------------------------------------

    @property
    def available(self) -> int:
        with self._lock:
            return sum(1 for pod in self.pods if pod.available.is_set())

    def wait_available(self, count: int, timeout: float) -> bool:
        """Wait until ``count`` replicas are ready (their pods' events)."""
        def enough() -> bool:
            return sum(1 for pod in self.pods if pod.available.is_set()) >= count
        with self._ended:
            return self._ended.wait_for(enough, timeout)

    def wait_stopped(self, timeout: float) -> bool:
        """Wait until no pod is left (stopped replicas exit after their round)."""
        with self._ended:
            return self._ended.wait_for(lambda: not self.pods, timeout)

    def pod_ended(self, pod: Pod) -> None:
        with self._ended:
            if pod in self.pods:
                self.pods.remove(pod)
            self._ended.notify_all()
        self._scale()

    def notify(self) -> None:
        """A pod became available: wake wait_available."""
        with self._ended:
            self._ended.notify_all()

    def _scale(self, replace: list[Pod] | None = None) -> None:
        """Start pods up to the wanted count; terminate the newest beyond it."""
        starting: list[Pod] = []
        stopping: list[Pod] = []
        with self._lock:
            live = [pod for pod in self.pods if not pod.stop.is_set()]
            if replace:
                live = [pod for pod in live if pod not in replace]
            while len(live) < self.wanted:
                pod = Pod(f"{self.name}-dpl-{secrets.token_hex(3)}", self)
                self.pods.append(pod)
                live.append(pod)
                starting.append(pod)
            stopping = live[self.wanted:]
        for pod in stopping:
            pod.terminate()
        for pod in starting:
            pod.start()

    def shutdown(self, timeout: float = 30.0) -> None:
        with self._lock:
            self.wanted = 0
            pods = list(self.pods)
        for pod in pods:
            pod.terminate()
        for pod in pods:
            pod.thread.join(timeout)
