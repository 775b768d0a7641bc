"""Exponential backoff with decorrelated jitter, for every retry loop of the ingest.

Each delay is drawn between `first_s` and three times the previous one (the first between
`first_s` and three times it), capped at `cap_s` ("decorrelated jitter"). The draws come
from a generator seeded from `os.urandom` per `Backoff`, so workers restarted together (a
deployment, a NATS or S3 outage that ends for all at once) spread their retries instead of
hitting the recovering server in lockstep.
Every delay is at least `first_s`, which bounds the attempts of any span of time.
"""

import os
import random


class Backoff:
    """Delays of one retry loop; `reset` after a success."""

    def __init__(self, first_s: float, cap_s: float) -> None:
        self.first_s = first_s
        self.cap_s = cap_s
        self._random = random.Random(os.urandom(16))
        self._previous = 0.0

    def next(self) -> float:
        """The delay before the next attempt (s)."""
        high = 3 * max(self.first_s, self._previous)
        self._previous = min(self.cap_s, self._random.uniform(self.first_s, high))
        return self._previous

    def reset(self) -> None:
        self._previous = 0.0

    @property
    def failing(self) -> bool:
        """True after a delay was drawn and before `reset`."""
        return self._previous > 0.0
