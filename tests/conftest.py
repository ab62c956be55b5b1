"""Shared fixtures: a started cluster double per test, and anyio on asyncio."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from oscar_sd._hub import close_all_hubs
from tests.double import ClusterDouble, services

pytest_plugins = ["anyio"]

USERS = {"alice": "alice-pw", "bob": "bob-pw"}
SERVICE = "stable-diffusion"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _close_notification_hubs() -> Iterator[None]:
    """Hubs are process-wide; each test's hubs go with its cluster double."""
    yield
    close_all_hubs()


@pytest.fixture
def cluster() -> Iterator[ClusterDouble]:
    """A started ClusterDouble: users alice/bob, service "stable-diffusion" (fake generator)."""
    double = ClusterDouble(users=USERS)
    double.start()
    try:
        double.add_service(SERVICE, input_path=f"{SERVICE}/in", output_path=f"{SERVICE}/out",
                           handler=services.fake_generator)
        yield double
    finally:
        double.stop()
