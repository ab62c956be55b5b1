"""The doctor's check of a spill-over pair: a warm service and the per-job service it names.

The pair works when the partner exists for this identity, runs the same image and
model (a spilled request must come out as the warm one would have), and starts a
job per upload (an ``input`` folder). It says whether this cluster can start and
stop the warm service by demand (OSCAR v4.1+), or keeps its ``min_scale``.
"""

from __future__ import annotations

from typing import Any

from ._cluster import OscarCluster
from ._errors import AuthenticationError
from ._service_paths import SPILL_SERVICE_VARIABLE, spill_partner
from ._versions import OscarVersion

NAME = "spill-over pair"


def _model(definition: dict[str, Any]) -> str:
    variables = (definition.get("environment") or {}).get("variables") or {}
    return str(variables.get("OSCAR_SD_MODEL") or "")


async def pair_check(checks: Any, cluster: OscarCluster, definition: dict[str, Any],
                     version: OscarVersion) -> None:
    """Add the ``spill-over pair`` check to ``checks`` (the doctor's checklist)."""
    partner = spill_partner(definition)
    if partner is None:
        checks.add(NAME, "skip", f"no per-job partner named ({SPILL_SERVICE_VARIABLE})")
        return
    try:
        other = await cluster.service(partner)
    except AuthenticationError:
        other, hidden = None, True
    else:
        hidden = False
    if other is None:
        seen = "is not open to this identity" if hidden else "does not exist"
        checks.add(NAME, "fail", f"the per-job partner {partner!r} {seen}",
                   "deploy both: oscar-sd deploy --pair (same owner and visibility)")
        return
    problems = []
    if other.get("image") != definition.get("image"):
        problems.append(f"image {other.get('image')} is not the warm one's "
                        f"({definition.get('image')})")
    if _model(other) != _model(definition):
        problems.append(f"model {_model(other) or 'unset'} is not the warm one's "
                        f"({_model(definition) or 'unset'})")
    if not other.get("input"):
        problems.append("it has no input folder, so no upload starts a job")
    if problems:
        checks.add(NAME, "fail", f"per-job partner {partner!r}: " + "; ".join(problems),
                   "redeploy the pair from one FDL pair: oscar-sd deploy --pair")
        return
    on_demand = ("warm on demand: `oscar-sd warm auto` (as its owner) starts and stops it"
                 if version.can_stop_start else
                 f"OSCAR {version} cannot stop or start it: it keeps its min_scale")
    checks.add(NAME, "ok", f"spills to {partner!r} (same image and model); {on_demand}")
