"""At start, a warm replica checks that its claims can be exclusive (:mod:`oscar_sd._claim_probe`).

When the storage does not refuse a second ``If-None-Match: *`` PUT with 412
(MinIO before RELEASE.2024-05-07, or RELEASE.2025-09-06), two replicas could
both claim one request and run it twice. So the replica says why in its log
and in ``/health``, and then either runs as the only claimer (it looks before
it writes a claim, which is safe with no other claimer) or, when more than one
replica may run (``expose.max_scale`` above 1), refuses to start.
"""

from __future__ import annotations

import logging

from .._claim_probe import ClaimProbe, probe_conditional_put
from .claims import WarmStore
from .errors import ConfigurationError
from .warm_config import WarmSettings

logger = logging.getLogger("oscar_sd.service")


def check_claims(store: WarmStore, settings: WarmSettings) -> ClaimProbe | None:
    """Probe the output folder; switch ``store`` to claiming alone if it must.

    ConfigurationError when claims cannot be exclusive and ``settings.replicas`` > 1.
    None when the probe could not run (storage down at start): claims stay conditional.
    """
    path = settings.output_path
    try:
        probe = probe_conditional_put(store.client, path.bucket, path.folder)
    except Exception as exc:
        logger.warning("Could not probe conditional PUTs on %s (%s); claiming with "
                       "If-None-Match: * as usual", path.bucket, type(exc).__name__)
        return None
    if probe.honoured:
        return probe
    if settings.replicas > 1:
        raise ConfigurationError(
            f"Claims cannot be exclusive: {probe.problem}. With up to {settings.replicas} "
            f"replicas a request could run twice, so this replica does not start: "
            f"{probe.fix}, or run one replica (expose.max_scale: 1, or OSCAR_SD_REPLICAS=1).")
    store.conditional = False
    logger.warning("Claims cannot be exclusive: %s. Running as the only claimer (one "
                   "replica); %s before adding replicas.", probe.problem, probe.fix)
    return probe


def claims_health(probe: ClaimProbe | None) -> str:
    """The ``claims`` line of ``/health``."""
    if probe is None:
        return "unprobed: claiming with If-None-Match: *"
    if probe.honoured:
        return "exclusive: a second If-None-Match: * PUT is refused with 412"
    return f"only claimer: {probe.problem}; {probe.fix}"
