"""Crash points for recovery tests: `LAKE_INGEST_FAILPOINT=<name>` kills the process there.

The names mark the steps of a commit: `before_write`, `after_write` (files written, no
ledger entry), `after_ledger` (ledger written, messages not acked). Unset, it does nothing.
"""

import os
import signal

FAILPOINT_ENV = "LAKE_INGEST_FAILPOINT"


def failpoint(name: str) -> None:
    """Die at once, as with `kill -9`, when the environment names this point."""
    if os.environ.get(FAILPOINT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
