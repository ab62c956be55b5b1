"""The OSCAR REST subset the app uses, shaped by tests/data/oscar-api.yaml.

Auth on everything but ``/health``, as grycap/oscar ``pkg/utils/auth/auth.go``
and ``oidc.go`` do it: HTTP basic with the one admin account, or an OIDC
``Bearer`` token that the issuer's userinfo endpoint accepts; the user id is
the userinfo ``sub``. With ``oidc_groups`` (OSCAR's ``OIDC_GROUPS``) the user
must be in one of them, read from the ``entitlements`` claim as ``getGroupsEGI``
does, else 401 with an empty body (``IsAuthorised`` false, ``AbortWithStatus``),
on ``/system/config`` too: the groups are readable only by an admitted user.
(OSCAR also verifies a JWT's signature first; the loopback provider issues
opaque tokens, so the userinfo check is the whole check here.)  An OIDC user
gets their own MinIO keys from ``/system/config`` and sees only the services
open to them. Creating or deleting a service restarts "MinIO", as on a real
cluster, so every listen stream drops at that moment.
"""

from __future__ import annotations

import base64
import bisect
import copy
import hmac
import json
import secrets
from typing import TYPE_CHECKING, Any

from flask import Flask, Response, request

from . import policies, versions
from .jobs import DeployedService, StoragePath
from .system import add_system_routes

if TYPE_CHECKING:
    from .cluster import ClusterDouble


def _text(body: str, status: int) -> Response:
    return Response(body, status=status, mimetype="text/plain")


def _json(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body), status=status, mimetype="application/json")


def complete_service(definition: dict[str, Any], cluster_id: str) -> dict[str, Any]:
    """Fill in what OSCAR fills in when a service is created."""
    service = copy.deepcopy(definition)
    service.setdefault("cluster_id", cluster_id)
    service.setdefault("image", "ghcr.io/grycap/oscar-sd-double:latest")
    service.setdefault("script", "#!/bin/sh\n# run in-process by the cluster double\n")
    service.setdefault("memory", "1Gi")
    service.setdefault("cpu", "1.0")
    service.setdefault("log_level", "INFO")
    service.setdefault("alpine", False)
    service.setdefault("enable_gpu", False)
    service.setdefault("input", [])
    service.setdefault("output", [])
    service.setdefault("environment", {"variables": {}})
    service.setdefault("annotations", {})
    service.setdefault("labels", {})
    service["token"] = service.get("token") or secrets.token_hex(32)
    if str(service.get("isolation_level", "")).upper() == "USER":
        service["bucket_list"] = sorted(
            bucket for user in service.get("allowed_users") or []
            for bucket in private_buckets(service, user))
    return service


def private_buckets(definition: dict[str, Any], uid: str) -> set[str]:
    """The private bucket of ``uid`` for an ``isolation_level: USER`` service, if it has one.

    grycap/oscar pkg/handlers/create.go: ``<input bucket>-<uid[:10]>`` for each
    allowed user, with the input and output folders in it.
    """
    if str(definition.get("isolation_level", "")).upper() != "USER":
        return set()
    if uid not in (definition.get("allowed_users") or []):
        return set()
    inputs = definition.get("input") or []
    if not inputs:
        return set()
    bucket = str(inputs[0]["path"]).strip("/").split("/", 1)[0]
    return {f"{bucket}-{uid[:10]}"}


def egi_groups(claims: dict[str, Any]) -> list[str]:
    """The groups OSCAR reads from userinfo (pkg/utils/auth/oidc.go ``getGroupsEGI``): the
    ``entitlements`` URNs ``urn:mace:egi.eu:group:<group>:...``, lowercased, field 4."""
    groups = []
    for urn in claims.get("entitlements") or []:
        urn = str(urn).strip().lower()
        fields = urn.split(":")
        if urn.startswith("urn:mace:egi.eu:group") and len(fields) >= 5:
            groups.append(fields[4])
    return groups


def create_app(double: ClusterDouble) -> Flask:
    app = Flask("oscar-double")

    def user() -> str | None:
        """The authenticated user (the admin's name, or an OIDC ``sub``), or None."""
        header = request.headers.get("Authorization", "")
        scheme, _, credentials = header.partition(" ")
        if scheme.lower() == "basic":
            try:
                name, _, password = base64.b64decode(credentials).decode().partition(":")
            except ValueError:
                return None
            admin, admin_password = double.admin
            same = hmac.compare_digest(f"{name}:{password}", f"{admin}:{admin_password}")
            return name if same else None
        if scheme.lower() == "bearer" and double.oidc is not None:
            claims = double.oidc.userinfo(credentials.strip())
            if not claims or not claims.get("sub"):
                return None
            if double.oidc_groups and not set(egi_groups(claims)) & set(double.oidc_groups):
                return None
            return str(claims["sub"])
        return None

    def oidc_user() -> str | None:
        """The OIDC user of this request (set by ``authenticate``); None for the admin."""
        return getattr(request, "oidc_user", None)

    def visible(definition: dict[str, Any]) -> bool:
        """What an OIDC user may see, by owner and visibility (policies.py)."""
        uid = oidc_user()
        return uid is None or policies.may_see(definition, uid)

    def bound_definition() -> tuple[dict[str, Any] | None, Response | None]:
        """The body as gin's ShouldBindJSON binds it for this OSCAR version
        (pkg/handlers/create.go, update.go): a wrong port shape is a 400."""
        definition = request.get_json(force=True, silent=True)
        problem = versions.bind_error(definition, double.oscar_version)
        if problem is not None:
            return None, _text(f"The service specification is not valid: {problem}", 400)
        if not definition.get("name"):
            return None, _text("error: the service definition needs a name", 400)
        return versions.go_json_keys(definition), None

    @app.before_request
    def authenticate() -> Response | None:
        rule = request.url_rule.rule if request.url_rule is not None else request.path
        with double.count_lock:
            double.oscar_requests[f"{request.method} {rule}"] += 1
        if double.oscar_api_down:  # what an ingress answers while OSCAR's pod is gone
            return _text("503 Service Temporarily Unavailable", 503)
        if request.path == "/health":
            return None
        if request.path.startswith("/job/") and _service_token_ok():
            return None
        who = user()
        if who is None and request.headers.get("Authorization", "").lower().startswith(
                "bearer "):
            return Response(status=401)  # oidc.go: c.AbortWithStatus(401), no body
        if who is None:
            return Response("Unauthorized", status=401, mimetype="text/plain",
                            headers={"WWW-Authenticate": 'Basic realm="OSCAR"'})
        if request.headers.get("Authorization", "").lower().startswith("bearer "):
            request.oidc_user = who  # type: ignore[attr-defined]
            double.minio_keys_for(who)  # OSCAR's middleware makes the MinIO user here
        return None

    def _service_token_ok() -> bool:
        name = request.path.removeprefix("/job/").strip("/")
        service = double.runner.services.get(name)
        header = request.headers.get("Authorization", "")
        return bool(service and header == f"Bearer {service.definition.get('token')}")

    @app.get("/health")
    def health() -> Response:
        return _text("Ok", 200)

    @app.get("/system/info")
    def info() -> Response:
        return _json({
            "version": f"v{double.oscar_version}", "git_commit": "cluster-double",
            "architecture": "amd64",
            "kubernetes_version": "v1.30.0",
            "serverless_backend": {"name": "Knative", "version": "1.15"},
        })

    def minio_keys() -> tuple[str, str]:
        """Basic auth gets the cluster's MinIO keys, a bearer token its user's own."""
        uid = oidc_user()
        if uid is not None:
            return double.minio_keys_for(uid)
        return double.minio_access_key, double.minio_secret_key

    @app.get("/system/config")
    def config() -> Response:
        settings = {
            "name": "oscar", "namespace": "oscar", "services_namespace": "oscar-svc",
            "gpu_available": False, "interLink_available": False,
            "serverless_backend": "knative", "yunikorn_enable": False,
            "oidc_groups": list(double.oidc_groups),
        }
        # ConfigForUser's {config, minio_provider}, with the config also at the top level
        # as OSCAR answers a basic-auth user.
        access_key, secret_key = minio_keys()
        return _json({**settings, "config": settings, "minio_provider": {
            "endpoint": double.minio_endpoint, "verify": False,
            "access_key": access_key, "secret_key": secret_key, "region": "us-east-1",
        }})

    @app.get("/system/services")
    def list_services() -> Response:
        return _json([s.definition for s in list(double.runner.services.values())
                      if visible(s.definition)])

    @app.post("/system/services")
    def create_service() -> Response:
        definition, refused = bound_definition()
        if definition is None:
            return refused or _text("error", 400)
        if definition["name"] in double.runner.services:
            return _text(f"error: service {definition['name']} already exists", 409)
        # create.go: the creator owns it (basic auth: cluster_admin); private by default.
        definition["owner"] = oidc_user() or policies.DEFAULT_OWNER
        definition["visibility"] = policies.visibility(definition)
        double.deploy(definition, double.default_handler, job_delay=0.0)
        double.restart_minio()
        return Response(status=201)

    @app.put("/system/services")
    def update_service() -> Response:
        definition, refused = bound_definition()
        if definition is None:
            return refused or _text("error", 400)
        current = double.runner.services.get(definition["name"])
        if current is None:
            return _text(f"error: service {definition['name']} not found", 404)
        merged = complete_service({**current.definition, **definition}, double.cluster_id)
        merged["token"] = current.definition["token"]
        if "owner" in current.definition:  # the owner stays who created it
            merged["owner"] = current.definition["owner"]
        for entry in merged["input"] + merged["output"]:
            double.storage.make_bucket(StoragePath.parse(entry).bucket)
        double.runner.services[merged["name"]] = DeployedService(
            merged, current.handler, current.job_delay)
        return Response(status=204)

    @app.get("/system/services/<name>")
    def read_service(name: str) -> Response:
        service = double.runner.services.get(name)
        if service is None:
            return _text(f"error: service {name} not found", 404)
        if not visible(service.definition):
            return _text("error: this user is not allowed to use the service", 403)
        return _json(service.definition)

    @app.delete("/system/services/<name>")
    def delete_service(name: str) -> Response:
        if double.runner.services.pop(name, None) is None:
            return _text(f"error: service {name} not found", 404)
        double.restart_minio()
        return Response(status=204)

    @app.post("/system/buckets")
    def create_bucket() -> Response:
        """grycap/oscar pkg/handlers/buckets/create_bucket.go (v3.6.0 on): the bucket is
        made with the admin's client; for a bearer user, private or restricted, the
        owner's MinIO policy gets s3:* on it (pkg/utils/minio.go SetPolicies). An
        existing bucket is a 400 ("the bucket ... already exists", createBucket)."""
        bucket = request.get_json(force=True, silent=True)
        if not isinstance(bucket, dict) or not isinstance(bucket.get("bucket_name"), str):
            return _text("The Bucket specification is not valid", 400)
        name = bucket["bucket_name"].strip(" /").split("/", 1)[0]
        if name in double.storage.backend.buckets:
            return _text(f"Error creating bucket with name '{name}': the bucket "
                         f'"{name}" already exists\n', 400)
        double.storage.make_bucket(name)
        uid = oidc_user()
        if uid is not None and (bucket.get("visibility") or "private") != "public":
            double.bucket_owners[name] = uid
        return Response(status=201)

    def exposed_deployment(name: str) -> tuple[Any, Response | None]:
        """The Deployment of exposed service ``name``, or OSCAR's refusal
        (pkg/handlers/lifecycle.go: 404 unknown, 403 not the owner, 400 not exposed)."""
        service = double.runner.services.get(name)
        if service is None:
            return None, Response(status=404)
        uid = oidc_user()
        if uid is not None and service.definition.get("owner", uid) != uid:
            return None, _text(f"User {uid} doesn't have permission to manage this service",
                               403)
        if not (service.definition.get("expose") or {}).get("api_port"):
            return None, _text(f'service "{name}" is not exposed', 400)
        deployment = double.exposed.get(name)
        if deployment is None:  # exposed, but its Deployment is gone
            return None, Response(status=404)
        return deployment, None

    @app.get("/system/services/<name>/deployment")
    def deployment_status(name: str) -> Response:
        if not versions.has_deployment_status(double.oscar_version):
            return _text("404 page not found", 404)  # gin's answer for a route it lacks
        deployment, refused = exposed_deployment(name)
        return refused or _json(deployment.status())

    @app.post("/system/services/<name>/<action>")
    def lifecycle(name: str, action: str) -> Response:
        lifecycle_routes = versions.has_lifecycle(double.oscar_version)
        if action not in ("stop", "start", "restart") or not lifecycle_routes:
            return _text("404 page not found", 404)
        deployment, refused = exposed_deployment(name)
        if refused is not None:
            return refused
        getattr(deployment, action)()
        return _json(deployment.status())

    @app.get("/system/logs/<service>")
    def list_jobs(service: str) -> Response:
        if service not in double.runner.services:
            return _text(f"error: service {service} not found", 404)
        jobs = double.runner.jobs(service)
        names, next_page = _job_page(sorted(jobs), request.args.get("page", ""))
        if names is None:
            return _text("continue key is not valid", 500)
        answer: dict[str, Any] = {"jobs": {name: jobs[name].info() for name in names}}
        if next_page:
            answer["next_page"] = next_page
        return _json(answer)

    @app.delete("/system/logs/<service>")
    def delete_jobs(service: str) -> Response:
        if service not in double.runner.services:
            return _text(f"error: service {service} not found", 404)
        double.runner.delete_jobs(service, request.args.get("all", "false").lower() == "true")
        return Response(status=204)

    @app.get("/system/logs/<service>/<job>")
    def job_logs(service: str, job: str) -> Response:
        found = double.runner.jobs(service).get(job)
        if found is None:
            return _text(f"error: job {job} not found", 404)
        return _text(found.log, 200)

    @app.delete("/system/logs/<service>/<job>")
    def delete_job(service: str, job: str) -> Response:
        if not double.runner.delete_job(service, job):
            return _text(f"error: job {job} not found", 404)
        return Response(status=204)

    @app.post("/job/<name>")
    def invoke_async(name: str) -> Response:
        service = double.runner.services.get(name)
        if service is None:
            return _text(f"error: service {name} not found", 404)
        body = request.get_data()
        try:
            json.loads(body)
            suffix = ".json"
        except ValueError:
            suffix = ".txt"
        double.runner.submit(service, data=body, input_name=f"{secrets.token_hex(16)}{suffix}")
        return Response(status=201)

    add_system_routes(app, double, oidc_user)
    return app


# OSCAR lists a service's jobs a page at a time (grycap/oscar pkg/handlers/logs.go,
# MakeJobsInfoHandler): a Kubernetes list with ``Limit: JOB_LISTING_LIMIT`` (70 by
# default, pkg/types/config.go) and ``Continue: ?page=``, answered as JobsResponse
# {jobs, next_page: ListMeta.Continue, remaining_jobs: ListMeta.RemainingItemCount}.
# Kubernetes lists in key (name) order, and leaves RemainingItemCount unset for a list
# with a label selector, which OSCAR always uses: so remaining_jobs never comes.
JOB_LISTING_LIMIT = 70


def _job_page(names: list[str], page: str) -> tuple[list[str] | None, str]:
    """One page of sorted job ``names`` after the continue token ``page``, and the next token.

    None for a token this server did not make (Kubernetes refuses it).
    """
    start = 0
    if page:
        try:
            after = base64.b64decode(page + "=" * (-len(page) % 4), altchars=b"-_",
                                     validate=True).decode()
        except ValueError:
            return None, ""
        start = bisect.bisect_right(names, after)
    chunk = names[start:start + JOB_LISTING_LIMIT]
    more = start + JOB_LISTING_LIMIT < len(names)
    token = base64.urlsafe_b64encode(chunk[-1].encode()).decode().rstrip("=") if more else ""
    return chunk, token
