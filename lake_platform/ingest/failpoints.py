"""Fault points for recovery tests, chosen by `LAKE_INGEST_FAILPOINT=<name>`.

Crash points kill the process there, as with `kill -9`; they mark the steps of a commit:
`before_write`, `after_write` (files written, no ledger entry), `after_ledger` (ledger
written, messages not acked). Names starting with `raise:` raise `FailpointError` instead,
e.g. `raise:route:SIGNALS` fails the pull task of stream SIGNALS. Unset, nothing happens.
"""

import os
import signal

FAILPOINT_ENV = "LAKE_INGEST_FAILPOINT"
RAISING_PREFIX = "raise:"


class FailpointError(RuntimeError):
    """The failure a `raise:` fault point injects."""


def failpoint(name: str) -> None:
    """Die at once, or raise for `raise:` names, when the environment names this point."""
    if os.environ.get(FAILPOINT_ENV) != name:
        return
    if name.startswith(RAISING_PREFIX):
        raise FailpointError(f"fault injected at {name}")
    os.kill(os.getpid(), signal.SIGKILL)
