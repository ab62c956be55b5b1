"""Where a service takes prompts and leaves results, for the user at hand.

A service definition names its MinIO ``input[]`` and ``output[]`` paths,
``<bucket>/<folder>``. With ``isolation_level: USER`` OSCAR also makes each
allowed user a private bucket that triggers the same service, and the user's
requests belong there, not in the shared bucket the other users can read.

How OSCAR names it (grycap/oscar ``pkg/handlers/create.go``, ``docs/multitenancy.md``):
the private bucket of user ``uid`` is ``<input bucket>-<uid[:10]>``, listed in
the definition's ``bucket_list``; in it OSCAR creates the input path's folder
and the output path's folder (``input``/``output`` in the docs' example); a
job started from it writes its output to the same private bucket. A user's
MinIO access key is their uid (``docs/multitenancy.md``: "a MinIO user with
its UID as AccessKey"), which is how the app learns the uid.

A warm service (``manifests/stable-diffusion-warm.yaml``) has no ``input``, so
that OSCAR starts no job per upload: its replicas read the folder named by its
``OSCAR_SD_INPUT_PATH`` variable, and write to ``OSCAR_SD_OUTPUT_PATH`` (or its
``output``), and so does the app. Its ``OSCAR_SD_SPILL_SERVICE`` names the
per-job service it spills over to (``_spill.py``).
"""

from __future__ import annotations

from typing import Any

from ._errors import ServiceMisconfiguredError
from ._storage import StoragePath


def service_paths(
    definition: dict[str, Any], user_id: str | None = None
) -> tuple[StoragePath, StoragePath]:
    """The input and output paths the user ``user_id`` (an OIDC uid) sends to and reads from.

    ``user_id`` None (basic auth: the cluster admin) always gets the shared paths.
    """
    input_path, output_path = first_minio(definition, "input"), first_minio(definition, "output")
    if user_id is None or str(definition.get("isolation_level", "")).upper() != "USER":
        return input_path, output_path
    private = private_bucket(input_path.bucket, user_id)
    if private not in (definition.get("bucket_list") or []):
        raise ServiceMisconfiguredError(
            f"Service {definition.get('name')!r} keeps each user's files apart "
            "(isolation_level: USER), but has no private bucket for you. Ask its owner to add "
            "you to its allowed_users."
        )
    return StoragePath(private, input_path.folder), StoragePath(private, output_path.folder)


def private_bucket(input_bucket: str, user_id: str) -> str:
    """OSCAR's name for ``user_id``'s private bucket of a service (``create.go``)."""
    return f"{input_bucket}-{user_id[:10]}"


#: The variables of a warm service's definition that name its folders.
WARM_PATH_VARIABLES = {"input": "OSCAR_SD_INPUT_PATH", "output": "OSCAR_SD_OUTPUT_PATH"}


def first_minio(definition: dict[str, Any], kind: str) -> StoragePath:
    """The service's first MinIO ``input`` or ``output`` path (a warm service's variable)."""
    for entry in definition.get(kind) or []:
        provider = str(entry.get("storage_provider", "minio"))
        if provider.split(".")[0] == "minio" and entry.get("path"):
            return StoragePath.parse(entry["path"])
    variables = (definition.get("environment") or {}).get("variables") or {}
    named = str(variables.get(WARM_PATH_VARIABLES[kind]) or "").strip("/ ")
    if named:
        return StoragePath.parse(named)
    raise ServiceMisconfiguredError(
        f"Service {definition.get('name')!r} has no MinIO {kind} path, so the app cannot "
        f"hand it prompts or collect its images. Add an {kind} with storage_provider "
        "minio.default to its definition."
    )


#: The warm service's variable naming its per-job partner (manifests/stable-diffusion-warm.yaml).
SPILL_SERVICE_VARIABLE = "OSCAR_SD_SPILL_SERVICE"


def spill_partner(definition: dict[str, Any]) -> str | None:
    """The per-job service a warm service's definition names, if any."""
    variables = (definition.get("environment") or {}).get("variables") or {}
    name = str(variables.get(SPILL_SERVICE_VARIABLE) or "").strip()
    return name or None
