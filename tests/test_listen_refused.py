"""A listen request refused while every other storage call works: listing-only mode.

MinIO answers a restricted service's users 403 AccessDenied on listen (OSCAR gives
them no ``s3:ListenBucketNotification``); other servers answer 405 or 501, proxies
in plain text. The hub must say so once, run on listing alone, and never tell the
person that storage cannot be reached.
"""

from __future__ import annotations

import logging
from typing import Any

import anyio
import pytest

from oscar_sd import Backoff, GenerationRequest, OscarSD, Progress
from oscar_sd._notify.hub import close_all_hubs
from tests.double import ClusterDouble

pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True)
def _fresh_hubs() -> Any:
    yield
    close_all_hubs()


@pytest.mark.parametrize("how, refusal", [
    ("access-denied", "403 AccessDenied"),
    ("method-not-allowed", "405 MethodNotAllowed"),
    ("not-implemented", "501 NotImplemented"),
    ("proxy-501", "501"),
    ("proxy-403", "403"),
])
async def test_a_refused_listen_puts_the_hub_in_listing_only_mode(
    cluster: ClusterDouble, caplog: pytest.LogCaptureFixture, how: str, refusal: str
):
    cluster.refuse_listen(cluster.minio_access_key, how)
    caplog.set_level(logging.INFO, logger="oscar_sd")
    messages: list[str] = []

    def progress(report: Progress) -> None:
        messages.append(report.message)

    requests = [GenerationRequest(prompt=f"refused {i}", seed=i, num_images=1) for i in range(3)]
    async with OscarSD.connect(cluster.oscar_endpoint, service="stable-diffusion",
                               user=cluster.admin[0], password=cluster.admin[1],
                               backoff=Backoff(0.01, 0.2)) as sd:
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tasks:
                for request in requests:
                    tasks.start_soon(sd.generate, request, progress)
        stats = sd._hub.stats
        assert stats.listen_unsupported and stats.listen_refusal == refusal
        assert stats.resolved == 3 and stats.resolved_by_event == 0  # found by listing
        assert stats.connects == 0 and cluster.listen_connections == 0
        assert sd._hub.trouble is None
    said = [r for r in caplog.records if "listen API" in r.getMessage()]
    assert len(said) == 1 and refusal in said[0].getMessage()  # once, with why
    assert not [m for m in messages if "reach" in m.lower()], messages


async def test_a_refusal_for_one_user_leaves_another_listening(cluster: ClusterDouble):
    cluster.refuse_listen("somebody-else", "access-denied")
    async with OscarSD.connect(cluster.oscar_endpoint, service="stable-diffusion",
                               user=cluster.admin[0], password=cluster.admin[1]) as sd:
        with anyio.fail_after(20):
            await sd.generate(GenerationRequest(prompt="listening", num_images=1))
        assert not sd._hub.stats.listen_unsupported and sd._hub.stats.connects >= 1
