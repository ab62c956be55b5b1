"""Shared fixtures: a started cluster double per test, and anyio on asyncio."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from oscar_sd._notify.hub import close_all_hubs
from tests.double import ClusterDouble, OidcProviderDouble, services

pytest_plugins = ["anyio"]

#: The cluster's one basic-auth account (OSCAR has exactly one: the admin).
ADMIN = ("oscar", "oscar-pw")
SERVICE = "stable-diffusion"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _history_in_a_temporary_folder(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Local-mode history goes to the data folder: never the real one in a test."""
    monkeypatch.setenv("OSCAR_SD_DATA_DIR", str(tmp_path_factory.mktemp("data")))


@pytest.fixture(autouse=True)
def _close_notification_hubs() -> Iterator[None]:
    """Hubs are process-wide; each test's hubs go with its cluster double."""
    yield
    close_all_hubs()


@pytest.fixture(scope="session")
def oidc_provider() -> Iterator[OidcProviderDouble]:
    """One loopback OIDC provider for the whole run (anyone signs in as any ``sub``)."""
    with OidcProviderDouble() as provider:
        yield provider


def _started(double: ClusterDouble) -> Iterator[ClusterDouble]:
    double.start()
    try:
        double.add_service(SERVICE, input_path=f"{SERVICE}/in", output_path=f"{SERVICE}/out",
                           handler=services.fake_generator)
        yield double
    finally:
        double.stop()


@pytest.fixture
def cluster() -> Iterator[ClusterDouble]:
    """A started ClusterDouble: admin oscar/oscar-pw, service "stable-diffusion" (fake)."""
    yield from _started(ClusterDouble(admin=ADMIN))


@pytest.fixture
def oidc_cluster(oidc_provider: OidcProviderDouble) -> Iterator[ClusterDouble]:
    """The same, with OIDC users signing in at ``oidc_provider`` (``double.sign_in(sub)``)."""
    yield from _started(ClusterDouble(admin=ADMIN, oidc=oidc_provider))


@pytest.fixture
def versioned(request: pytest.FixtureRequest,
              oidc_provider: OidcProviderDouble) -> Iterator[ClusterDouble]:
    """A started double of the OSCAR release given as the fixture's param (default the
    newest), with OIDC, and no service: ``@pytest.mark.parametrize("versioned",
    ["3.6.5", "4.0.0", "4.1.2"], indirect=True)``."""
    version = getattr(request, "param", "4.1.2")
    with ClusterDouble(admin=ADMIN, oidc=oidc_provider, oscar_version=version) as double:
        yield double


#: How long the process may take to exit once the tests are done.
LINGER_LIMIT = 30.0


def pytest_unconfigure(config: pytest.Config) -> None:
    """Say which threads a test left running, rather than hang the run on them.

    Python waits for every non-daemon thread before it exits, and anyio's worker
    threads are not daemons: one left blocked (an abandoned storage call) would keep
    the finished run from ending. A watchdog gives the exit ``LINGER_LIMIT``
    seconds; past them it shows every thread's stack and ends the process with
    pytest's own status."""
    import faulthandler
    import os
    import sys
    import threading

    status = getattr(config, "_oscar_sd_exit_status", 1)

    def watchdog() -> None:
        threading.Event().wait(LINGER_LIMIT)  # a normal exit ends this daemon first
        names = ", ".join(t.name for t in threading.enumerate()
                          if not t.daemon and t is not threading.main_thread())
        print(f"\nthe run could not exit {LINGER_LIMIT:g} s after the tests: threads "
              f"still running ({names}); their stacks:", file=sys.stderr)
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        sys.stderr.flush()
        os._exit(status)

    threading.Thread(target=watchdog, name="exit-watchdog", daemon=True).start()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    session.config._oscar_sd_exit_status = int(exitstatus)  # type: ignore[attr-defined]
