"""Connecting a spill-over pair: the warm service and the per-job service it names.

:func:`connect_backend` is what the app and the CLI connect with: a plain
:class:`~oscar_sd.OscarSD`, or a :class:`~oscar_sd.SpillOver` when the service
is a warm one whose variables name a per-job partner (``OSCAR_SD_SPILL_SERVICE``).
"""

from __future__ import annotations

import logging
from typing import Any

from ._connect import Connecting
from ._errors import ServiceMisconfiguredError
from ._oscar import OscarSD
from ._service_paths import SPILL_SERVICE_VARIABLE, spill_partner
from ._spill import DEFAULT_SPILL_AFTER, SpillOver
from ._warm_control import DEFAULT_IDLE_STOP, WarmControl

logger = logging.getLogger("oscar_sd.spill")


def connect_pair(
    endpoint: str,
    *,
    service: str,
    per_job_service: str | None = None,
    spill_after: float = DEFAULT_SPILL_AFTER,
    idle_stop: float = DEFAULT_IDLE_STOP,
    check_interval: float = 2.0,
    keep_password: bool = True,
    **options: Any,
) -> Connecting[SpillOver]:
    """Connect the warm service ``service`` and its per-job partner as one :class:`SpillOver`.

    The partner is ``per_job_service``, else the one the warm definition names in
    ``OSCAR_SD_SPILL_SERVICE``. ``options`` are :meth:`OscarSD.connect`'s. Connecting
    is a sign-in: a stopped warm service is started (OSCAR v4.1+, by its owner).
    With ``keep_password=False`` the password goes once connected, so from then on
    the warm service is neither started nor stopped from here (its state as last
    seen stands): run ``oscar-sd warm auto`` as its owner for that.
    """

    async def open_pair() -> SpillOver:
        warm, definition = await _open_first(endpoint, service, options)
        partner = per_job_service or spill_partner(definition)
        if not partner:
            await warm.aclose()
            raise ServiceMisconfiguredError(
                f"Service {service!r} names no per-job service to spill over to: set "
                f"{SPILL_SERVICE_VARIABLE} in its variables (manifests/"
                "stable-diffusion-warm.yaml), or pass per_job_service.")
        return await _open_pair(warm, definition, partner, endpoint, keep_password,
                                (spill_after, idle_stop, check_interval), options)

    return Connecting(open_pair())


def connect_backend(
    endpoint: str,
    *,
    service: str,
    spill_after: float = DEFAULT_SPILL_AFTER,
    idle_stop: float = DEFAULT_IDLE_STOP,
    check_interval: float = 2.0,
    keep_password: bool = True,
    **options: Any,
) -> Connecting[OscarSD | SpillOver]:
    """:meth:`OscarSD.connect`, or :func:`connect_pair` when ``service`` is a warm
    service that names a per-job partner: what the app and the CLI connect with."""

    async def open_backend() -> OscarSD | SpillOver:
        first, definition = await _open_first(endpoint, service, options)
        partner = spill_partner(definition)
        if partner is not None and await first._cluster.service(partner) is None:
            # The warm service alone was deployed: it works as it is, without spill-over.
            logger.warning("Service %r names per-job service %r to spill over to, which is "
                           "not there: no spill-over (deploy both: oscar-sd deploy --pair)",
                           service, partner)
            partner = None
        if partner is None:
            if not keep_password:
                _forget_password(first)
            return first
        return await _open_pair(first, definition, partner, endpoint, keep_password,
                                (spill_after, idle_stop, check_interval), options)

    return Connecting(open_backend())


async def _open_first(endpoint: str, service: str,
                      options: dict[str, Any]) -> tuple[OscarSD, dict[str, Any]]:
    """The client of ``service`` (password kept for now) and its definition."""
    client = await OscarSD.connect(endpoint, service=service, keep_password=True, **options)
    try:
        return client, await client._cluster.require_service(service)
    except BaseException:
        await client.aclose()
        raise


async def _open_pair(warm: OscarSD, definition: dict[str, Any], partner: str, endpoint: str,
                     keep_password: bool, timing: tuple[float, float, float],
                     options: dict[str, Any]) -> SpillOver:
    spill_after, idle_stop, check_interval = timing
    try:
        per_job = await OscarSD.connect(endpoint, service=partner,
                                        keep_password=keep_password, **options)
    except BaseException:
        await warm.aclose()
        raise
    min_scale = int((definition.get("expose") or {}).get("min_scale", 1) or 0)
    control = WarmControl(warm._cluster, warm.service, idle_stop=idle_stop,
                          check_interval=check_interval, min_scale=min_scale)
    spill = SpillOver(warm, per_job, control, spill_after=spill_after)
    await control.on_demand()  # a sign-in: someone is there
    if not keep_password:
        _forget_password(warm)
    return spill


def _forget_password(client: OscarSD) -> None:
    client._cluster.forget_password()
    client.job_watch = None  # listing the jobs would need the password
