"""Recreating a durable consumer that was deleted under a running ingest.

A pull to a deleted consumer is answered 503 (no responders) at once. A consumer created
anew with the default deliver policy would redeliver the whole stream (days of messages),
so it is created to start after the last stream sequence the ledger records as committed
for that stream. What another live worker had pulled and not yet committed it still holds
and commits; messages that were waiting for redelivery after a crashed worker before the
deletion are not known to the ledger (a deleted consumer takes that state with it).

A consumer that exists but does not answer (no leader during an election) is left alone:
the caller backs off and asks again.
"""

import asyncio
import logging
import time

from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js.errors import BadRequestError, NotFoundError

from lake_platform.ingest.jetstream import DURABLE, ConsumerSizing, consumer_config, retrying
from lake_platform.ingest.ledger import list_entries, read_entry_files
from lake_platform.storage import LakeStore
from lake_platform.timestamps import HOUR_NS

log = logging.getLogger(__name__)

LEDGER_LOOKBACK_HOURS = 8 * 24
"""How far back the ledger is searched for a stream's last committed message (a stream keeps
seven days by default)."""
CONSUMER_NOT_FOUND = 10014


def last_committed_seq(
    store: LakeStore,
    stream: str,
    now_ns: int | None = None,
    lookback_hours: int = LEDGER_LOOKBACK_HOURS,
) -> int | None:
    """The highest stream sequence of `stream` that a ledger entry records, from the newest
    commit hour holding one back to `lookback_hours`; None when none does."""
    hour_ns = (time.time_ns() if now_ns is None else now_ns) // HOUR_NS * HOUR_NS
    for _ in range(lookback_hours):
        listed = list_entries(store, hour_ns, hour_ns + HOUR_NS - 1)
        entries = read_entry_files(store, [path for _, path in listed])
        seqs = [
            file.last_seq
            for entry in entries
            for file in (*entry.files, *entry.quarantine)
            if file.stream == stream and file.last_seq is not None
        ]
        if seqs:
            return max(seqs)
        hour_ns -= HOUR_NS
    return None


async def recreate_if_deleted(
    js: JetStreamContext, store: LakeStore, stream: str, sizing: ConsumerSizing
) -> bool:
    """Create the durable consumer of `stream` again when JetStream says it does not exist,
    starting after the ledger's last committed message; True when it was created here.

    Another worker may create it at the same moment: its consumer is then used as it is.
    """
    try:
        await js.consumer_info(stream, DURABLE)
        return False  # it exists: no leader yet, or it was created meanwhile
    except NotFoundError as error:
        if error.err_code != CONSUMER_NOT_FOUND:
            return False  # the stream itself is gone: nothing to create the consumer on
    last = await asyncio.to_thread(last_committed_seq, store, stream)
    state = (await js.stream_info(stream)).state
    config = consumer_config(sizing)
    if last is not None and last <= state.last_seq:
        config.deliver_policy = js_api.DeliverPolicy.BY_START_SEQUENCE
        config.opt_start_seq = last + 1
    # A ledger sequence beyond the stream's last: the stream was recreated, and all it holds
    # is new.
    try:
        await retrying(f"recreating consumer {stream}/{DURABLE}", js.add_consumer, stream, config)
    except BadRequestError as error:  # created by another worker meanwhile, differently
        log.info("consumer %s/%s was recreated by another worker: %s", stream, DURABLE, error)
        return False
    start = f"sequence {config.opt_start_seq}" if config.opt_start_seq else "its first message"
    log.warning(
        "consumer %s/%s was deleted: created it again, delivering from %s "
        "(the ledger's last committed: %s)",
        stream,
        DURABLE,
        start,
        last,
    )
    return True
