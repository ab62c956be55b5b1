"""The library's own worker threads for storage, in two lanes.

Every call to storage blocks (minio is a blocking library), so it runs in a
worker thread. anyio's default limiter is shared by the whole process
(Starlette's sync endpoints, Gradio, other libraries), so the library keeps
its own: one lane for *new* requests (uploading a prompt, and tidying up when
no result came) and one for *finished* ones (downloading, unpacking and
deleting a landed result). A flood of new uploads then never makes a request
whose images are ready wait for a thread.
"""

from __future__ import annotations

from dataclasses import dataclass

import anyio

#: Threads per lane unless ``connect(storage_threads=...)`` says otherwise.
DEFAULT_STORAGE_THREADS = 16
#: The hub's own threads (listen reader, maintenance) also use the storage client,
#: and a thread abandoned by a cancelled call may hold a connection a little longer.
HUB_THREADS = 2
ABANDONED_SLACK = 4


@dataclass(frozen=True)
class StorageLimits:
    """The two lanes of one client (create them on the client's event loop)."""

    #: Uploads of new prompts, and their clean-up when no result came.
    requests: anyio.CapacityLimiter
    #: Downloads, unpacking and deletion of landed results.
    results: anyio.CapacityLimiter

    @classmethod
    def create(cls, threads_per_lane: int = DEFAULT_STORAGE_THREADS) -> StorageLimits:
        if threads_per_lane < 1:
            raise ValueError("storage_threads must be at least 1")
        return cls(anyio.CapacityLimiter(threads_per_lane), anyio.CapacityLimiter(threads_per_lane))

    @staticmethod
    def pool_size(threads_per_lane: int) -> int:
        """Connections the storage client needs: one for every thread that may use it."""
        return 2 * threads_per_lane + HUB_THREADS + ABANDONED_SLACK
