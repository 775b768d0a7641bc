"""Fault points for recovery tests, chosen by `LAKE_INGEST_FAILPOINT=<name>`.

Crash points kill the process there, as with `kill -9`; they mark the steps of a commit:
`before_write`, `after_write` (files written, no ledger entry), `after_ledger` (ledger
written, messages not acked). Names starting with `raise:` raise `FailpointError` instead,
e.g. `raise:route:SIGNALS` fails the pull task of stream SIGNALS. Unset, nothing happens.

Poison points make the Bronze file of one partition value fail every write, as a frame
Polars cannot encode does: `encode_error:<value>` (the store's writer raises Polars'
`ComputeError`), `encode_panic:<value>` (it raises Polars' `PanicException`, a
`BaseException`, as a panic in the Rust writer does). `decode_panic:<value>` makes decoding
raise a `PanicException` for every batch holding a message whose payload contains `<value>`
(a message that panics the decoder).
"""

import os
import signal
from collections.abc import Sequence

import polars as pl

FAILPOINT_ENV = "LAKE_INGEST_FAILPOINT"
RAISING_PREFIX = "raise:"
ENCODE_ERROR = "encode_error:"
ENCODE_PANIC = "encode_panic:"
DECODE_PANIC = "decode_panic:"


class FailpointError(RuntimeError):
    """The failure a `raise:` fault point injects."""


def failpoint(name: str) -> None:
    """Die at once, or raise for `raise:` names, when the environment names this point."""
    if os.environ.get(FAILPOINT_ENV) != name:
        return
    if name.startswith(RAISING_PREFIX):
        raise FailpointError(f"fault injected at {name}")
    os.kill(os.getpid(), signal.SIGKILL)


class _PanickingFrame(pl.DataFrame):
    """A frame whose Parquet writer panics, as Polars' Rust writer can."""

    def write_parquet(self, *args: object, **kwargs: object) -> None:  # type: ignore[override]
        raise pl.exceptions.PanicException("fault injected: the Parquet writer panicked")


def poisoned_body(value: str, body: pl.DataFrame) -> pl.DataFrame:
    """`body`, or for the value a poison point names, a frame whose write always fails."""
    chosen = os.environ.get(FAILPOINT_ENV, "")
    if chosen == ENCODE_ERROR + value:
        unwritable = pl.Series("_unwritable", [object()] * body.height, dtype=pl.Object)
        return body.with_columns(unwritable)
    if chosen == ENCODE_PANIC + value:
        return _PanickingFrame(body)
    return body


def panic_on_poisoned_payload(payloads: Sequence[bytes]) -> None:
    """Raise Polars' `PanicException` when `decode_panic:<value>` is chosen and a payload
    contains `<value>`, as a decoder panicking on that message would."""
    chosen = os.environ.get(FAILPOINT_ENV, "")
    if not chosen.startswith(DECODE_PANIC):
        return
    value = chosen.removeprefix(DECODE_PANIC)
    needle = value.encode()
    if any(needle in payload for payload in payloads):
        raise pl.exceptions.PanicException(f"fault injected: the decoder panicked on {value}")
