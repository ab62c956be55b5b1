"""ClusterDouble: an OSCAR cluster and its MinIO on loopback, for tests.

    with OidcProviderDouble() as oidc, ClusterDouble(oidc=oidc) as double:
        double.add_service("stable-diffusion", input_path="stable-diffusion/in",
                           output_path="stable-diffusion/out")
        ...  # talk to double.oscar_endpoint and double.minio_endpoint
        # as the one admin account (double.admin), or as an OIDC user:
        token = double.sign_in("alice@egi.eu")["access_token"]

Both servers bind random free ports on 127.0.0.1 and run in daemon threads.
The fault switches are plain attributes and methods; all are thread-safe.
"""

from __future__ import annotations

import secrets
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from . import policies, services, versions
from .capacity import Capacity
from .conditional import release_stamp
from .exposed import ExposedDeployment, ReplicaFactory
from .jobs import DeployedService, Handler, Job, JobRunner, StoragePath
from .kueue import Kueue, Resources
from .oidc import OidcProviderDouble
from .oscar import complete_service, create_app, private_buckets
from .refusals import KINDS
from .restarts import RestartLoop
from .s3 import S3Front
from .server import LoopbackServer
from .system import quota_of


class ClusterDouble:
    """OSCAR REST + S3 with MinIO's listen extension + jobs, all in-process."""

    def __init__(self, admin: tuple[str, str] = ("oscar", "oscar-pw"),
                 oidc: OidcProviderDouble | None = None, *,
                 cluster_id: str = "oscar-double", keepalive_interval: float = 0.5,
                 oscar_version: str = versions.NEWEST, capacity: Capacity | None = None,
                 oidc_groups: tuple[str, ...] = (), gpus: int = 1) -> None:
        #: The OSCAR release played ("3.6.5", "4.0.0" or "4.1.2"; "4.0" is 4.0.0): what
        #: ``/system/info`` answers and what the API accepts (versions.py).
        self.oscar_version = versions.normalise(oscar_version)
        #: GPUs on the cluster's nodes (``/system/status`` ``cluster.metrics.gpu.total_gpu``).
        self.gpus = gpus
        #: Kueue quotas by OIDC user, as the quotas API (v4) answers and sets them:
        #: {"cpu": millicores, "memory": bytes, "gpu": units}; a user without an
        #: entry has OSCAR's defaults (quotas.py).
        self.user_quotas: dict[str, dict[str, int]] = {}
        #: Time and GPUs (capacity.py): pod starts, model loads and generations take
        #: their durations, on a GPU pool shared by job pods and exposed replicas.
        #: None: everything is instant and GPUs are unbounded.
        self.capacity = capacity
        #: Exposed services' Deployments by service name (exposed.py).
        self.exposed: dict[str, ExposedDeployment] = {}
        # OSCAR has exactly one basic-auth account, the cluster admin
        # (grycap/oscar pkg/utils/auth/auth.go: gin.BasicAuth with one entry).
        self.admin = admin
        # People are OIDC users: their bearer tokens are checked at this provider.
        self.oidc = oidc
        #: OSCAR's OIDC_GROUPS: with any, a bearer user in none of them gets 401
        #: (grycap/oscar pkg/utils/auth/oidc.go IsAuthorised). Empty: the double checks
        #: no group (OSCAR itself would then refuse every OIDC user).
        self.oidc_groups = tuple(oidc_groups)
        self.cluster_id = cluster_id
        self.minio_access_key = "double-" + secrets.token_hex(6)
        self.minio_secret_key = secrets.token_hex(20)
        # What a service created through the REST API runs (it has no Python handler).
        self.default_handler: Handler = services.fake_generator
        self.storage = S3Front(self.minio_access_key, self.minio_secret_key)
        self.storage.bucket_access = self._may_use_bucket
        # OSCAR makes each OIDC user a MinIO user on their first request: access key = uid.
        self.user_minio_keys: dict[str, tuple[str, str]] = {}
        # Buckets made through POST /system/buckets by an OIDC user: bucket -> owner uid.
        self.bucket_owners: dict[str, str] = {}
        self.storage.hub.keepalive_interval = keepalive_interval
        self.runner = JobRunner(self.storage, capacity=capacity)
        #: OSCAR's KUEUE_ENABLE (true by default): from v4.0 on, jobs of services not
        #: owned by the admin start Suspended until their owner's quota admits them.
        self.kueue_enable = True
        self.runner.kueue.active = self._kueue_active
        self.runner.kueue.quota_of = lambda owner: Resources.of_quota(quota_of(self, owner))
        self._s3_server = LoopbackServer(self.storage, "minio")
        self._oscar_server = LoopbackServer(create_app(self), "oscar")
        self.storage.hub.endpoint = self._s3_server.url
        self._keys_lock = threading.Lock()
        self._started = False
        self._oscar_api_down = False
        #: Requests that reached OSCAR's REST API, by "METHOD /route" (e.g.
        #: "GET /system/logs/<service>"), for tests that count API calls.
        self.oscar_requests: Counter[str] = Counter()
        self.count_lock = threading.Lock()

    # -- lifecycle ------------------------------------------------------------------

    def start(self) -> ClusterDouble:
        self._s3_server.start()
        self._oscar_server.start()
        self._started = True
        return self

    def stop(self) -> None:
        for deployment in list(self.exposed.values()):
            deployment.shutdown()
        self.storage.resume_uploads()
        self.storage.hub.drop_all()
        self.runner.stop()
        self._oscar_server.stop()
        self._s3_server.stop()
        self.storage.hub.drop_all(abort=True)
        self.storage.backend.reset()  # closes moto's temporary files
        self._started = False

    def __enter__(self) -> ClusterDouble:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def oscar_endpoint(self) -> str:
        return self._oscar_server.url

    @property
    def minio_endpoint(self) -> str:
        return self._s3_server.url

    # -- people ----------------------------------------------------------------------

    def sign_in(self, sub: str, groups: list[str] | None = None) -> dict[str, Any]:
        """Sign ``sub`` in at the OIDC provider: its token answer (``access_token``...).

        ``groups``: the user's EGI groups; by default the first group the double
        admits, if it checks groups."""
        if self.oidc is None:
            raise RuntimeError("this double has no OIDC provider: ClusterDouble(oidc=...)")
        if groups is None and self.oidc_groups:
            groups = [self.oidc_groups[0]]
        if groups is not None:
            self.oidc.set_groups(sub, groups)
        return self.oidc.sign_in(sub)

    def set_quota(self, uid: str, *, cpu: int | None = None, memory: int | None = None,
                  gpu: int | None = None) -> None:
        """Set ``uid``'s Kueue quota (millicores, bytes, GPUs), as an admin's
        ``PUT /system/quotas/user/:userId`` does."""
        given = {"cpu": cpu, "memory": memory, "gpu": gpu}
        update = {name: value for name, value in given.items() if value is not None}
        self.user_quotas[uid] = {**self.user_quotas.get(uid, {}), **update}
        self.runner.kueue.admit()  # suspended jobs that now fit start (kueue.py)

    def minio_keys_for(self, uid: str) -> tuple[str, str]:
        """The MinIO keys of OIDC user ``uid``, made on first use as OSCAR does."""
        with self._keys_lock:
            if uid not in self.user_minio_keys:
                self.user_minio_keys[uid] = (uid, secrets.token_hex(20))
                self.storage.extra_access_keys.add(uid)
            return self.user_minio_keys[uid]

    def _may_use_bucket(self, access_key: str, bucket: str, action: str) -> bool:
        """The admin (root) key reaches every bucket; a user's key what the policies
        OSCAR writes for each service allow them (policies.py), their own private
        buckets (pkg/handlers/create.go), and the buckets they made through
        /system/buckets (pkg/handlers/buckets/create_bucket.go)."""
        if access_key == self.minio_access_key:
            return True
        if bucket in self.bucket_owners:  # a user's own bucket: theirs alone
            return self.bucket_owners[bucket] == access_key
        for service in list(self.runner.services.values()):
            definition = service.definition
            if bucket in private_buckets(definition, access_key):
                return True
            paths = definition["input"] + definition["output"]
            if bucket not in {StoragePath.parse(entry).bucket for entry in paths}:
                continue
            actions = policies.bucket_actions(definition, access_key)
            if policies.permits(actions, action):
                return True
        return False

    # -- services ------------------------------------------------------------------

    def add_service(self, name: str, *, input_path: str, output_path: str,
                    handler: Handler | None = None, job_delay: float = 0.0,
                    input_suffix: list[str] | None = None,
                    input_prefix: list[str] | None = None,
                    **definition: Any) -> dict[str, Any]:
        """Deploy a service (no MinIO restart: this is test setup); returns its definition."""
        input_entry: dict[str, Any] = {"storage_provider": "minio.default", "path": input_path}
        if input_suffix:
            input_entry["suffix"] = list(input_suffix)
        if input_prefix:
            input_entry["prefix"] = list(input_prefix)
        output_entry = {"storage_provider": "minio.default", "path": output_path}
        service = {"name": name, "input": [input_entry], "output": [output_entry], **definition}
        return self.deploy(service, handler or self.default_handler, job_delay)

    def deploy(self, definition: Mapping[str, Any], handler: Handler,
               job_delay: float = 0.0) -> dict[str, Any]:
        """Register a service definition and create its buckets."""
        service = complete_service(dict(definition), self.cluster_id)
        for entry in service["input"] + service["output"]:
            self.storage.make_bucket(StoragePath.parse(entry).bucket)
        for bucket in service.get("bucket_list") or []:
            self.storage.make_bucket(bucket)
        self.runner.services[service["name"]] = DeployedService(service, handler, job_delay)
        return service

    def deploy_exposed(self, definition: Mapping[str, Any],
                       make_replica: ReplicaFactory) -> dict[str, Any]:
        """Register an exposed service and start its Deployment: ``min_scale`` pods,
        each running ``make_replica(pod name)`` (exposed.py)."""
        service = self.deploy(definition, services.fake_generator)
        self.exposed[service["name"]] = ExposedDeployment(
            service["name"], service, make_replica, self.capacity)
        return service

    def exposed_environment(self, name: str) -> dict[str, str]:
        """The environment OSCAR gives the pods of exposed service ``name``: its
        variables and secrets, and ``OSCAR_SERVICE_BASE_PATH`` since v4.0.0 only
        (grycap/oscar pkg/types/service.go, OscarServiceBasePathEnvVar)."""
        definition = self.runner.services[name].definition
        environment = definition.get("environment") or {}
        env = {**(environment.get("variables") or {}), **(environment.get("secrets") or {})}
        if versions.sets_base_path(self.oscar_version):
            env["OSCAR_SERVICE_BASE_PATH"] = f"/system/services/{name}/exposed"
        return {key: str(value) for key, value in env.items()}

    def remove_service(self, name: str) -> None:
        self.runner.services.pop(name, None)
        deployment = self.exposed.pop(name, None)
        if deployment is not None:
            deployment.shutdown()

    def jobs(self, service: str) -> dict[str, Job]:
        """The service's jobs by name (what /system/logs/{service} lists)."""
        return self.runner.jobs(service)

    # -- objects -------------------------------------------------------------------

    def make_bucket(self, bucket: str) -> None:
        self.storage.make_bucket(bucket)

    def put_object(self, bucket: str, key: str, data: bytes) -> None:
        """Write an object; its event fires (and jobs start) as for a client PUT."""
        self.storage.make_bucket(bucket)
        self.storage.written([self.storage.put_object(bucket, key, data)])

    def get_object(self, bucket: str, key: str) -> bytes:
        return self.storage.get_object(bucket, key)

    def list_keys(self, bucket: str, prefix: str = "") -> list[str]:
        return self.storage.list_keys(bucket, prefix)

    # -- fault switches ------------------------------------------------------------

    @property
    def escape_keys(self) -> bool:
        """Record keys URL-escaped like Go's url.QueryEscape (``quote_plus(key, safe="")``)."""
        return self.storage.hub.escape_keys

    @escape_keys.setter
    def escape_keys(self, value: bool) -> None:
        self.storage.hub.escape_keys = value

    @property
    def keepalive_interval(self) -> float:
        return self.storage.hub.keepalive_interval

    @keepalive_interval.setter
    def keepalive_interval(self, value: float) -> None:
        self.storage.hub.keepalive_interval = value  # for streams opened from now on

    @property
    def on_object_created(self) -> Callable[[str, str, float], None] | None:
        return self.storage.on_object_created

    @on_object_created.setter
    def on_object_created(self, hook: Callable[[str, str, float], None] | None) -> None:
        self.storage.on_object_created = hook

    def drop_streams(self, abort: bool = False) -> None:
        """End every open listen stream now (``abort``: reset the connections instead)."""
        self.storage.hub.drop_all(abort=abort)

    def stall_streams(self) -> None:
        """Every open stream goes silent but stays open; later streams work normally."""
        self.storage.hub.stall_all()

    def restart_minio(self, downtime: float = 0.0, *,
                      refuse_for: float = 0.0) -> threading.Thread | None:
        """Restart "MinIO"; returns at once. Every stream drops; with ``refuse_for``, as
        a real restart does (``LoopbackServer.restart``): the listening socket closes
        (connections refused for ``refuse_for`` seconds), open and idle connections are
        reset, and it listens again; then S3 answers 503 for ``downtime`` seconds.
        Returns the thread of the socket's restart (None without ``refuse_for``)."""
        if refuse_for > 0:
            self.storage.restart(refuse_for + downtime, abort=True)
            return self._s3_server.restart(refuse_for)
        self.storage.restart(downtime)
        return None

    def restarting_minio(self, every: float = 0.5, refuse_for: float = 0.1) -> RestartLoop:
        """``with double.restarting_minio():`` MinIO restarts every ``every`` seconds,
        refusing connections for ``refuse_for`` each time (people deploying)."""
        def restart(refuse: float) -> threading.Thread:
            self.storage.restart(refuse, abort=True)
            return self._s3_server.restart(refuse)

        return RestartLoop(restart, every=every, refuse_for=refuse_for)

    def lose_next_event(self, prefix: str = "") -> None:
        """The next ObjectCreated event whose key starts with ``prefix`` reaches no stream."""
        self.storage.hub.lose_next_event(prefix)

    def readers_fall_behind(self, queue_size: int = 1) -> None:
        """Open streams stop draining: beyond ``queue_size`` waiting events, MinIO drops them."""
        self.storage.hub.fall_behind(queue_size)

    def readers_catch_up(self) -> None:
        self.storage.hub.catch_up()

    @property
    def minio_release(self) -> str:
        """The MinIO release whose conditional PUT S3 answers like (double/conditional.py):
        before RELEASE.2024-05-07 ``If-None-Match: *`` never refuses, RELEASE.2025-09-06
        refuses every conditional PUT of a missing key with NoSuchKey."""
        return self.storage.minio_release

    @minio_release.setter
    def minio_release(self, value: str) -> None:
        release_stamp(value)  # a name like RELEASE.2024-12-18T13-15-44Z, or ValueError
        self.storage.minio_release = value

    @property
    def listen_api(self) -> str:
        """"minio", or how every listen request is refused: one of ``refusals.KINDS``
        ("not-implemented": 501; "ignored": a plain listing, as AWS S3; ...)."""
        return self.storage.hub.api

    @listen_api.setter
    def listen_api(self, value: str) -> None:
        if value != "minio" and value not in KINDS:
            raise ValueError(f"listen_api must be 'minio' or one of {KINDS}")
        self.storage.hub.api = value

    def refuse_listen(self, access_key: str, how: str | None = "access-denied") -> None:
        """Listen requests signed with ``access_key`` are refused ``how`` (one of
        ``refusals.KINDS``; "access-denied" is MinIO's 403 for a restricted service's
        users), while every other S3 call of theirs works. ``how=None`` lifts it."""
        if how is None:
            self.storage.hub.refusals.pop(access_key, None)
        elif how not in KINDS:
            raise ValueError(f"how must be one of {KINDS}")
        else:
            self.storage.hub.refusals[access_key] = how

    def fail_next_job(self, message: str = "the job failed") -> None:
        """The service reports a failure: the next job skips its handler, writes
        ``<job>.error.json`` and ends Succeeded (faas-supervisor ignores exit codes)."""
        self.runner.fail_next(message)

    def kill_next_job(self) -> None:
        """The next job's pod is killed (out of memory, evicted): Failed, nothing written."""
        self.runner.kill_next()

    def kill_next_job_after_start(self) -> None:
        """The next job runs its handler (which may write its started marker straight to
        storage), then its pod is killed before the upload: Failed, nothing else written."""
        self.runner.kill_next_after_start()

    def next_job_leaves_no_result(self) -> None:
        """The next job runs its handler but leaves nothing to upload (a script that failed
        without reporting it): Succeeded, no result."""
        self.runner.next_leaves_nothing()

    @property
    def oscar_api_down(self) -> bool:
        """While True, OSCAR's REST API answers 503 to everything (its pod is down behind
        the ingress); jobs and storage go on."""
        return self._oscar_api_down

    @oscar_api_down.setter
    def oscar_api_down(self, value: bool) -> None:
        self._oscar_api_down = value

    def stall_uploads(self, prefix: str) -> None:
        """Uploads of keys under ``prefix`` (in any bucket) stay in flight, not stored,
        until :meth:`resume_uploads`; ``stalled_uploads`` counts those that arrived."""
        self.storage.stall_uploads(prefix)

    def resume_uploads(self) -> None:
        self.storage.resume_uploads()

    @property
    def stalled_uploads(self) -> int:
        return self.storage.stalled_uploads

    # -- quotas (kueue.py) -----------------------------------------------------------

    def _kueue_active(self) -> bool:
        return self.kueue_enable and versions.at_least(self.oscar_version, "4.0.0")

    @property
    def kueue(self) -> Kueue:
        """The owners' ClusterQueues that admit suspended jobs (quotas: :meth:`set_quota`)."""
        return self.runner.kueue

    def hold_jobs(self) -> None:
        """Jobs stay Pending until :meth:`release_jobs`."""
        self.runner.hold()

    def release_jobs(self) -> None:
        self.runner.release()

    @property
    def listen_connections(self) -> int:
        return self.storage.hub.open_count

    @property
    def listen_connects_total(self) -> int:
        return self.storage.hub.connects_total
