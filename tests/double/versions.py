"""What differs between the OSCAR releases the double plays (``ClusterDouble(oscar_version=)``).

Real clusters run anything from v3.6 to v4.1; each difference below was read in
grycap/oscar at the named tag:

* ``expose.api_port`` / ``expose.nodePort`` are plain numbers up to v4.0 and
  lists (``[]int``, ``[]int32``) since v4.1.0 (``pkg/types/service.go``,
  ``ExposeSettings``). OSCAR binds the body with ``c.ShouldBindJSON``
  (``pkg/handlers/create.go``, ``update.go``): the wrong shape is a 400
  "The service specification is not valid: json: cannot unmarshal ...".
* ``OSCAR_SERVICE_BASE_PATH`` is set in exposed pods only since v4.0.0
  (``pkg/types/service.go``, ``OscarServiceBasePathEnvVar``).
* ``/system/quotas/user`` (own) and ``/system/quotas/user/:userId`` (admin) exist
  since v4.0.0 (``main.go``).
* ``/system/info`` answers the version with a leading ``v`` (``pkg/handlers/info.go``).
"""

from __future__ import annotations

from typing import Any

SUPPORTED = ("3.6.5", "4.0.0", "4.1.2")
NEWEST = SUPPORTED[-1]


def _parts(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.lstrip("v").split("."))


def normalise(version: str) -> str:
    """``"4.0"`` -> ``"4.0.0"``; refuses a release the double does not play."""
    parts = _parts(version) + (0,) * (3 - len(version.lstrip("v").split(".")))
    text = ".".join(str(part) for part in parts[:3])
    if text not in SUPPORTED:
        raise ValueError(f"the double plays OSCAR {', '.join(SUPPORTED)}, not {version!r}")
    return text


def at_least(version: str, minimum: str) -> bool:
    return _parts(version) >= _parts(minimum)


def ports_are_lists(version: str) -> bool:
    return at_least(version, "4.1.0")


def sets_base_path(version: str) -> bool:
    return at_least(version, "4.0.0")


def has_quotas_api(version: str) -> bool:
    return at_least(version, "4.0.0")


def has_deployment_status(version: str) -> bool:
    """``GET /system/services/<name>/deployment`` (main.go since v4.0.0)."""
    return at_least(version, "4.0.0")


def has_lifecycle(version: str) -> bool:
    """``POST /system/services/<name>/stop|start|restart`` (main.go since v4.1.0;
    absent at tag v4.0.0)."""
    return at_least(version, "4.1.0")


# The Go types of ExposeSettings' port fields, per release (pkg/types/service.go).
_PORT_FIELDS = {"api_port": ("int", "[]int"), "nodePort": ("int32", "[]int32")}


def bind_error(definition: Any, version: str) -> str | None:
    """What gin's ``ShouldBindJSON`` says about ``definition`` on ``version``, or None.

    Only the port fields' shapes are checked: Go's decoder ignores unknown fields,
    so a field an older release lacks is dropped, not refused.
    """
    if not isinstance(definition, dict):
        return "json: cannot unmarshal value into Go value of type types.Service"
    expose = definition.get("expose")
    if not isinstance(expose, dict):
        return None
    lists = ports_are_lists(version)
    for name, (scalar_type, list_type) in _PORT_FIELDS.items():
        if name not in expose or expose[name] is None:
            continue
        value = expose[name]
        if lists and not isinstance(value, list):
            kind = "number" if isinstance(value, (int, float)) else "string"
            return (f"json: cannot unmarshal {kind} into Go struct field "
                    f"ExposeSettings.expose.{name} of type {list_type}")
        if not lists and not isinstance(value, int):
            kind = "array" if isinstance(value, list) else "string"
            return (f"json: cannot unmarshal {kind} into Go struct field "
                    f"ExposeSettings.expose.{name} of type {scalar_type}")
    return None


def go_json_keys(definition: dict[str, Any]) -> dict[str, Any]:
    """``environment`` keys matched as Go's encoding/json does: case-insensitively.

    An FDL's ``Variables:`` (what oscar-cli's YAML decoding needs) reaches OSCAR's
    ``json:"variables"`` field; OSCAR answers it back as ``variables``.
    """
    environment = definition.get("environment")
    if not isinstance(environment, dict):
        return definition
    fixed: dict[str, Any] = {}
    for key, value in environment.items():
        fixed[key.lower() if key.lower() in ("variables", "secrets") else key] = value
    return {**definition, "environment": fixed}
