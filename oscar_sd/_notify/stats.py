"""A hub's counters: what each path resolved, what it cost, what went wrong."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass
class HubStats:
    """Counters for tests, benchmarks and the periodic log line."""

    connects: int = 0
    events: int = 0
    resolved: int = 0
    resolved_by_event: int = 0
    #: Progress keys (started markers) delivered to their waiters, by any path / by listing.
    progress: int = 0
    progress_reconciled: int = 0
    caught_up: int = 0
    reconciled: int = 0
    reconcile_requests: int = 0
    late_results_deleted: int = 0
    #: Listing-only mode: no listen API, or the listen request refused (then why:
    #: "403 AccessDenied", "501", ...; "" when the server has no listen API).
    listen_unsupported: bool = False
    listen_refusal: str = ""
    #: The latest problems (bounded: an outage retries for as long as it lasts).
    errors: deque[str] = field(default_factory=lambda: deque(maxlen=100))
