"""Capped exponential backoff with full jitter: how long to wait before trying storage again.

Full jitter (a random delay between 0 and the cap of that attempt) spreads the
retries of many clients over time, so a storage server that comes back is not
met by a burst of them at once.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    """Capped exponential backoff with full jitter, in seconds."""

    base: float = 0.05
    cap: float = 5.0

    def delay(self, attempt: int) -> float:
        # The exponent stops growing long after the cap is reached (a float overflows).
        return random.uniform(0, min(self.cap, self.base * 2 ** min(attempt, 64)))
