"""What ``oscar-sd deploy`` changes in an FDL's service before it sends it.

Each step is a pure function of the definition (a copy comes back), so the
rules read top to bottom and are tested one by one:

* who may use it: ``visibility`` and ``allowed_users`` (grycap/oscar
  ``docs/multitenancy.md``);
* the MinIO keys a warm service takes from ``environment.secrets`` (its pods get
  none from OSCAR, ``pkg/handlers/job.go``): with a token the person's own keys;
  with the admin password ``/system/config`` answers MinIO's *root* keys
  (``pkg/handlers/config.go``), which go in only when the caller says so;
* the app's root path where OSCAR does not set ``OSCAR_SERVICE_BASE_PATH``
  (before v4.0);
* the version's shape (``_versions.shape_for``).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable
from typing import Any

from ._errors import OscarSDError
from ._versions import OscarVersion, exposed_base_path

VISIBILITIES = ("private", "restricted", "public")

#: The secrets of a warm service (manifests/stable-diffusion-warm.yaml) that name its MinIO keys.
STORAGE_KEY_SECRETS = ("OSCAR_SD_MINIO_ACCESS_KEY", "OSCAR_SD_MINIO_SECRET_KEY")

#: The variable the app takes its root path from (oscar_sd/_settings.py).
ROOT_PATH_VARIABLE = "OSCAR_SD_ROOT_PATH"
_EXPOSED_PATH = re.compile(r"^/system/services/[^/]+/exposed/?$")


class DeployRefused(OscarSDError, ValueError):
    """The deploy would do something the caller has to agree to, or cannot work as asked."""


def normalise_environment(definition: dict[str, Any]) -> dict[str, Any]:
    """``environment.Variables`` (the spelling oscar-cli carries) as OSCAR's ``variables``."""
    environment = definition.get("environment")
    if not isinstance(environment, dict):
        return definition
    fixed = {key.lower() if key.lower() in ("variables", "secrets") else key: value
             for key, value in environment.items()}
    return {**definition, "environment": fixed}


def with_access(definition: dict[str, Any], visibility: str | None,
                allowed_users: Iterable[str] | None) -> dict[str, Any]:
    """Set who may use the service; the FDL's own values stay where none is given."""
    shaped = copy.deepcopy(definition)
    if visibility is not None:
        if visibility not in VISIBILITIES:
            raise DeployRefused(
                f"Visibility {visibility!r} is not one OSCAR knows: use one of "
                f"{', '.join(VISIBILITIES)}.")
        shaped["visibility"] = visibility
    users = [user.strip() for user in allowed_users or [] if user.strip()]
    if users:
        shaped["allowed_users"] = users
    return shaped


def access_warnings(definition: dict[str, Any], as_admin: bool) -> list[str]:
    """What the caller should know about who will be able to use the service."""
    visibility = str(definition.get("visibility") or "private")
    warnings: list[str] = []
    if as_admin and (visibility != "private" or definition.get("allowed_users")):
        warnings.append(
            f"service {definition['name']!r} is the admin's: OSCAR gives OIDC users no "
            "storage access to it whatever its visibility, so only the admin password can "
            "use it; deploy with a token (--token) to share it with people.")
    elif visibility == "restricted" and not definition.get("allowed_users"):
        warnings.append(
            f"service {definition['name']!r} is restricted but lists no --allowed-users: only "
            "you can use it.")
    if not as_admin and visibility in ("restricted", "public") and str(
            definition.get("isolation_level") or "").upper() != "USER":
        warnings.append(
            f"users of {visibility} service {definition['name']!r} can list its shared bucket, "
            "so they see each other's results; isolation_level: USER gives each a private "
            "bucket." + (" Restricted users may not listen to notifications: their app "
                         "finds results by listing, a few seconds later."
                         if visibility == "restricted" else ""))
    return warnings


def needs_storage_keys(definition: dict[str, Any]) -> bool:
    """True when the definition asks for MinIO keys in ``environment.secrets`` and leaves
    them empty (the warm service: its pods get no keys from OSCAR)."""
    secrets = (definition.get("environment") or {}).get("secrets")
    return isinstance(secrets, dict) and any(
        name in secrets and not str(secrets[name] or "").strip() for name in STORAGE_KEY_SECRETS)


def with_storage_keys(definition: dict[str, Any], config: dict[str, Any], *,
                      as_admin: bool, use_root_keys: bool) -> dict[str, Any]:
    """Fill the empty key secrets with the caller's keys from ``/system/config``.

    With the admin password those are MinIO's root keys: every pod of the service
    would hold full access to every bucket of the cluster. That takes
    ``use_root_keys``; without it this refuses and says what to do instead.
    """
    name = definition.get("name")
    if as_admin and not use_root_keys:
        raise DeployRefused(
            f"Service {name!r} takes MinIO keys from environment.secrets, and with the admin "
            "password the cluster answers MinIO's root keys: every pod of the service would "
            "hold full access to every bucket. Deploy with an OIDC token (--token: your own "
            "keys), put the keys of an account limited to its buckets in a copy of the FDL "
            "kept out of the repository, or pass --use-root-keys to accept the root keys.")
    provider = config.get("minio_provider") or {}
    keys = dict(zip(STORAGE_KEY_SECRETS,
                    (provider.get("access_key") or "", provider.get("secret_key") or ""),
                    strict=True))
    if not all(keys.values()):
        raise DeployRefused(
            f"Service {name!r} needs MinIO keys, and the cluster did not report this "
            "account's (/system/config has no minio_provider keys). Put the keys in the FDL's "
            "environment.secrets yourself, in a copy outside the repository.")
    shaped = copy.deepcopy(definition)
    secrets = shaped["environment"]["secrets"]
    for secret, value in keys.items():
        if secret in secrets and not str(secrets[secret] or "").strip():
            secrets[secret] = value
    return shaped


def with_root_path(definition: dict[str, Any], version: OscarVersion) -> dict[str, Any]:
    """Give an exposed app its root path where OSCAR does not (before v4.0).

    The FDL may carry ``OSCAR_SD_ROOT_PATH: /system/services/<name>/exposed`` (what
    oscar-cli can carry): it is made to name this service. Before v4.0 an exposed
    service without it gets it, as OSCAR v4 sets ``OSCAR_SERVICE_BASE_PATH``.
    """
    if not isinstance(definition.get("expose"), dict):
        return definition
    shaped = copy.deepcopy(definition)
    environment = shaped.setdefault("environment", {})
    variables = environment.setdefault("variables", {})
    wanted = exposed_base_path(shaped["name"])
    current = str(variables.get(ROOT_PATH_VARIABLE) or "")
    if _EXPOSED_PATH.match(current) or (not current and not version.sets_base_path):
        variables[ROOT_PATH_VARIABLE] = wanted
    return shaped
