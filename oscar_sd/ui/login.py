"""The login form's check: Gradio calls ``await login(user, password)``.

On a cluster the check is the cluster itself: the user's own credentials open
the user's own backend (DESIGN.md mistake 1 was one global client). Locally,
``OSCAR_SD_USERS`` names the accounts and all sessions share the one model.

A password is only ever handed to the backend; it is never logged, stored by
the app, or put in a page.

Gradio gets the bound method ``check``, a coroutine function: it awaits only
those (an object with an async ``__call__`` would be called, not awaited, and
its coroutine taken for a yes).
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from .._backend import Backend
from .._errors import (
    AuthenticationError,
    OscarSDError,
    ServiceMisconfiguredError,
    ServiceNotFoundError,
)
from .sessions import Sessions

log = logging.getLogger("oscar_sd.ui")

#: Opens a backend for one user from their credentials; raises
#: :class:`~oscar_sd.AuthenticationError` when the cluster refuses them. Results
#: go under the given folder.
BackendFactory = Callable[[str, str, Path], Awaitable[Backend]]


class ClusterLogin:
    """Logs users in against the cluster: valid credentials open their own backend."""

    def __init__(self, sessions: Sessions, open_backend: BackendFactory) -> None:
        self._sessions = sessions
        self._open_backend = open_backend

    async def check(self, user: str, password: str) -> bool:
        if not user or not password:
            return False
        folder = self._sessions.folder_for(user)

        async def reconnect() -> Backend:
            return await self._open_backend(user, password, folder)

        try:
            backend = await reconnect()
        except AuthenticationError:
            log.info("login of %s refused by the cluster", user)
            return False
        except (ServiceNotFoundError, ServiceMisconfiguredError) as exc:
            # The credentials were good (they are checked first); the service is
            # not usable yet. Let the user in: the page says what is wrong, and
            # the next click tries again.
            log.warning("login of %s accepted, but the service is not usable: %s", user, exc)
            await self._sessions.open(
                user,
                None,
                owns_backend=True,
                reconnect=reconnect,
                backend_error=exc,
                directory=folder,
            )
            return True
        except OscarSDError as exc:
            # The cluster is unreachable (or worse): credentials that cannot be
            # checked are refused. The form can only say "incorrect credentials",
            # so the reason goes to the log.
            log.warning("login of %s refused: %s", user, exc)
            return False
        await self._sessions.open(
            user, backend, owns_backend=True, reconnect=reconnect, directory=folder
        )
        log.info("login of %s: session open; %d open", user, len(self._sessions))
        return True


class LocalLogin:
    """Logs users in against ``OSCAR_SD_USERS``; every session shares the local backend."""

    def __init__(
        self, sessions: Sessions, accounts: dict[str, str], backend: Callable[[], Backend]
    ) -> None:
        self._sessions = sessions
        self._accounts = accounts
        self._backend = backend

    async def check(self, user: str, password: str) -> bool:
        expected = self._accounts.get(user)
        # Compared in constant time; an unknown user costs the same as a wrong password.
        given, wanted = password.encode(), (expected or "\0").encode()
        if not hmac.compare_digest(given, wanted) or expected is None:
            log.info("local login of %s refused", user)
            return False
        await self._sessions.open(user, self._backend(), owns_backend=False)
        return True
