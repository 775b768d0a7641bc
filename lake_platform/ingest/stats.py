"""Counters of one ingest run: the service keeps them, its status line and `/metrics` show
them (the service hands them to its status callback every second)."""

import time
from dataclasses import dataclass, field


@dataclass
class IngestStats:
    """Counters of one ingest run, for the status line and the summary."""

    started: float = field(default_factory=time.monotonic)
    messages: int = 0
    rows: int = 0
    files: int = 0
    quarantined: int = 0
    bytes: int = 0
    commits: int = 0
    storage_errors: int = 0
    last_error: str | None = None
    unhealthy: str | None = None
    """Why the worker cannot do its job now (pulls answered 503 for long), else None."""
    held_bytes_peak: int = 0
    """The most memory (estimated) messages pulled and not yet acked took at once."""

    @property
    def events_per_s(self) -> float:
        return self.messages / max(time.monotonic() - self.started, 1e-9)

    def line(self) -> str:
        """One status line; with storage errors, their count and the latest one."""
        line = (
            f"{self.messages:,} events ({self.events_per_s:,.0f}/s), {self.files:,} files, "
            f"{self.rows:,} rows, {self.quarantined:,} quarantined"
        )
        if self.storage_errors:
            line += f", {self.storage_errors:,} storage errors (last: {self.last_error})"
        return line
