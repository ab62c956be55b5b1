"""urllib3's retry warnings, said once and then summed up, not once a second.

urllib3 logs "Retrying (Retry(total=4, ...)) after connection broken by ..." at
WARNING for every retried request (``urllib3/connectionpool.py``, ``urlopen``).
While the cluster's storage is down, the library's calls retry about once a
second, and each one would put the same line in the server log. The first
goes through; those within the next minute are counted and held back; the
first after that minute goes through saying how many were held back.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

#: urllib3's logger of those warnings.
URLLIB3_POOL_LOGGER = "urllib3.connectionpool"
#: At most one retry warning per this many seconds reaches the log.
SUMMARY_SECONDS = 60.0


class RetrySummary(logging.Filter):
    """Lets one urllib3 retry warning through per ``window`` seconds, counting the rest."""

    def __init__(
        self, window: float = SUMMARY_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self.window = window
        self._clock = clock
        self._lock = threading.Lock()  # urllib3 logs from every worker thread
        self._shown_at: float | None = None
        self._held = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith("Retrying"):
            return True
        now = self._clock()
        with self._lock:
            if self._shown_at is not None and now - self._shown_at < self.window:
                self._held += 1
                return False
            held, self._held, self._shown_at = self._held, 0, now
        if held:
            record.msg = f"{record.getMessage()} (and {held} more retries like it in the last " \
                         f"{self.window:.0f} s)"
            record.args = None
        return True


def summarise_urllib3_retries() -> None:
    """Install :class:`RetrySummary` on urllib3's pool logger, once per process."""
    pool_logger = logging.getLogger(URLLIB3_POOL_LOGGER)
    if not any(isinstance(kept, RetrySummary) for kept in pool_logger.filters):
        pool_logger.addFilter(RetrySummary())
