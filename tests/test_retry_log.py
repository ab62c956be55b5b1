"""urllib3's retry warning during a storage outage: once, then a summary a minute."""

from __future__ import annotations

import logging

from oscar_sd._retry_log import RetrySummary


def test_one_retry_warning_a_minute_then_how_many_were_held_back() -> None:
    now = [100.0]
    logger = logging.getLogger("tests.retry_log")
    logger.propagate = False
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    logger.addHandler(Keep())
    logger.addFilter(RetrySummary(window=60, clock=lambda: now[0]))
    for _ in range(30):  # an outage: one retried call a second
        logger.warning("Retrying (%r) after connection broken by '%r': %s", "Retry(total=4)",
                       "NewConnectionError", "/bucket")
        now[0] += 1
    logger.warning("the cluster's storage answers again")  # other warnings pass as they are
    now[0] += 31
    logger.warning("Retrying (%r) after connection broken by '%r': %s", "Retry(total=4)",
                   "NewConnectionError", "/bucket")

    assert seen[0].startswith("Retrying ('Retry(total=4)')")
    assert seen[1] == "the cluster's storage answers again"
    assert seen[2].endswith("(and 29 more retries like it in the last 60 s)")
    assert len(seen) == 3
