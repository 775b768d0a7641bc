"""What an ingest worker holds: the messages it pulled and has not acked yet, at every stage.

A message is held from its pull until its ack is sent: while it is routed, waits in a
buffer, is committed, sits in files written but not yet named by a ledger entry, or waits
for its ack while NATS is away. The count is bounded by the consumer's limit (a worker pulls
at most `ConsumerSizing.process_inflight`), the memory by `BRONZE_MAX_BUFFER_BYTES` (rows
alone do not bound it: 1 MB payloads make 50,000 held messages tens of GB); `pull_bytes`
turns the memory bound into the size of the next pull.
"""

from lake_platform.ingest.acks import UnsentAcks
from lake_platform.ingest.buffers import Buffer, Buffers
from lake_platform.ingest.file_writes import Written
from lake_platform.ingest.stats import IngestStats
from lake_platform.schemas import STREAMS

DECODE_HEADROOM = 8
"""Pulls ask for at most (1 - 1/8) of the room `BRONZE_MAX_BUFFER_BYTES` leaves: decoded rows
may take a little more memory than the messages did."""
MESSAGE_OVERHEAD_BYTES = 64 * 1024
"""Subject, reply and headers of the largest message, beyond the server's `max_payload`."""


class Held:
    """Messages pulled and not yet acked, stage by stage: those being routed or committed are
    counted here; the buffers, the files written and the unsent acks count their own."""

    def __init__(
        self,
        buffers: Buffers,
        written: Written,
        unsent_acks: UnsentAcks,
        stats: IngestStats,
        max_buffer_bytes: int,
    ) -> None:
        self._buffers = buffers
        self._written = written
        self._unsent_acks = unsent_acks
        self._stats = stats
        self._max_buffer_bytes = max_buffer_bytes
        self.routing_rows = 0
        self.routing_bytes = 0
        self.committing_rows = 0
        self.committing_bytes = 0
        self.committing: list[Buffer] = []
        self.unrecorded_rows = 0
        """In files a failed commit wrote, awaiting their ledger entry."""

    @property
    def rows(self) -> int:
        """Messages pulled and not yet acked: the consumer's limit bounds them."""
        held = self._buffers.rows + self.committing_rows + self.routing_rows
        return held + self.unrecorded_rows + len(self._unsent_acks)

    @property
    def bytes(self) -> int:
        """Estimated memory of the messages pulled and not yet acked."""
        return self._buffers.bytes + self.committing_bytes + self.routing_bytes

    def note_bytes(self) -> None:
        """Keep the peak of `bytes` in the stats."""
        self._stats.held_bytes_peak = max(self._stats.held_bytes_peak, self.bytes)

    @property
    def empty(self) -> bool:
        """Nothing held: no buffer open, nothing routed or committed, no ack left to send."""
        return (
            len(self._buffers) == 0
            and not self.committing_rows
            and not self.routing_rows
            and not self._written
            and not self._unsent_acks
        )

    def replies(self) -> list[str]:
        """Ack subjects of the messages in buffers, being committed, or written unrecorded."""
        replies = [*self._written.replies, *self._buffers.replies()]
        for buffer in self.committing:
            replies.extend(buffer.replies())
        return replies

    def pull_bytes(self, max_payload: int) -> int | None:
        """`max_bytes` of the next pull: a stream's share of the room `BRONZE_MAX_BUFFER_BYTES`
        leaves, less the decoding headroom (the streams' pulls run at once, so each may fill
        its share); None when a share cannot hold the largest message the server takes
        (`max_payload`; the buffers are then committed at once). Holding nothing, a pull may
        always take one largest message, even past a bound smaller than that."""
        bound = self._max_buffer_bytes
        held = self.bytes
        share = (bound - bound // DECODE_HEADROOM - held) // len(STREAMS)
        largest = max_payload + MESSAGE_OVERHEAD_BYTES
        if share >= largest:
            return share
        return largest if held == 0 else None
