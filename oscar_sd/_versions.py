"""What each OSCAR release accepts in a service definition, and what it offers.

Real clusters run anything from v3.6 to v4.1. Read in grycap/oscar at each tag:

* ``expose.api_port`` and ``expose.nodePort`` are numbers up to v4.0 and lists
  (``[]int``, ``[]int32``) since v4.1.0 (``pkg/types/service.go``). OSCAR binds
  the body with ``ShouldBindJSON`` (``pkg/handlers/create.go``): the wrong shape
  is a 400. ``nodePort: 0`` (what oscar-cli always sends) is never sent here.
* ``OSCAR_SERVICE_BASE_PATH`` is set in exposed pods since v4.0.0 only.
* ``expose.probe_mode`` since v4.0.0, ``expose.auth_type`` since v4.1.0: dropped
  for older releases (Go ignores them, so sending them only misleads).
* The quotas API (``/system/quotas/user``) since v4.0.0 (``main.go``).
* Exposed services' ``stop``/``start``/``restart`` since v4.1.0 (``main.go``; not at
  tag v4.0.0), their ``/deployment`` status since v4.0.0.

``GET /system/info`` answers ``version`` as ``"v4.1.2"``; a version that cannot be
read is taken as the newest release known here.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any

_VERSION = re.compile(r"v?(\d+)\.(\d+)(?:\.(\d+))?")


@dataclass(frozen=True, order=True)
class OscarVersion:
    """An OSCAR release, e.g. ``OscarVersion.parse("v4.1.2")``."""

    major: int
    minor: int
    patch: int = 0

    @classmethod
    def parse(cls, text: Any) -> OscarVersion | None:
        """The release in ``/system/info``'s ``version``; None when it names none."""
        match = _VERSION.match(str(text or "").strip())
        if match is None:
            return None
        major, minor, patch = match.groups()
        return cls(int(major), int(minor), int(patch or 0))

    def __str__(self) -> str:
        return f"v{self.major}.{self.minor}.{self.patch}"

    @property
    def ports_are_lists(self) -> bool:
        return self >= V4_1

    @property
    def sets_base_path(self) -> bool:
        return self >= V4_0

    @property
    def has_quotas_api(self) -> bool:
        return self >= V4_0

    @property
    def can_stop_start(self) -> bool:
        """``POST /system/services/<name>/stop|start`` for exposed services (v4.1.0,
        ``main.go``, ``pkg/handlers/lifecycle.go``)."""
        return self >= V4_1

    def expose_shape(self) -> str:
        """The FDL shape of the exposed ports this release needs, in words."""
        return ("expose.api_port as a list, e.g. [8080]" if self.ports_are_lists
                else "expose.api_port as a number, e.g. 8080")


V4_0 = OscarVersion(4, 0, 0)
V4_1 = OscarVersion(4, 1, 0)
#: The newest release this code was read against: assumed when a cluster does not say.
NEWEST_KNOWN = OscarVersion(4, 1, 2)


def exposed_base_path(name: str) -> str:
    """Where OSCAR serves exposed service ``name`` (``OSCAR_SERVICE_BASE_PATH`` since v4.0)."""
    return f"/system/services/{name}/exposed"


def shape_for(definition: dict[str, Any], version: OscarVersion) -> dict[str, Any]:
    """``definition`` as ``version`` accepts it: a copy, the caller's dict untouched."""
    shaped = copy.deepcopy(definition)
    expose = shaped.get("expose")
    if not isinstance(expose, dict):
        return shaped
    for port in ("api_port", "nodePort"):
        if port not in expose:
            continue
        values = _ports(expose[port])
        if not values:  # 0, [], None: "no port", which v4.1 refuses as a number
            del expose[port]
        elif version.ports_are_lists:
            expose[port] = values
        elif len(values) == 1:
            expose[port] = values[0]
        else:
            raise ValueError(
                f"OSCAR {version} takes one expose.{port}, not {values}: keep one port, "
                "or deploy to OSCAR v4.1 or later.")
    if version < V4_0:
        expose.pop("probe_mode", None)
    if version < V4_1:
        expose.pop("auth_type", None)
    return shaped


def _ports(value: Any) -> list[int]:
    """The non-zero ports of a number, a numeric string or a list of them."""
    items = value if isinstance(value, list) else [value]
    ports: list[int] = []
    for item in items:
        try:
            port = int(item)
        except (TypeError, ValueError):
            raise ValueError(f"expose port {item!r} is not a number") from None
        if port:
            ports.append(port)
    return ports
