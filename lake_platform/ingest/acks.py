"""Acks of committed messages, and in-progress acks of the messages still held.

A message is acked only after its batch's files and ledger entry are durable. nats-py
buffers what is published while it reconnects, but only up to 2 MiB (~26k acks), and raises
past that: the acks of a large commit are kept here instead (`UnsentAcks`) and go out once
the client is connected again. Messages whose acks wait past `ack_wait` are redelivered,
and written again: Silver removes such duplicates.

Every third of the consumer's `ack_wait`, each message held (in a buffer waiting for its
max age, in a slow commit, in a retry) gets an in-progress ack (`send_in_progress_acks`),
so it is not redelivered meanwhile.
"""

import asyncio
import logging
from collections.abc import Callable

import nats.errors

from lake_platform.ingest.connection import LakeNatsClient

log = logging.getLogger(__name__)

IN_PROGRESS = b"+WPI"
"""JetStream's in-progress ack: restarts the message's `ack_wait` timer."""


class UnsentAcks:
    """Ack subjects of committed messages, kept until the client can send them."""

    def __init__(self) -> None:
        self._replies: list[str] = []

    def __len__(self) -> int:
        return len(self._replies)

    def add(self, replies: list[str]) -> None:
        self._replies.extend(replies)

    async def send(self, nc: LakeNatsClient) -> None:
        """Send the acks; while the client reconnects, keep them."""
        if not self._replies or not nc.is_connected:
            return
        replies, self._replies = self._replies, []
        try:
            await nc.publish_all(replies)
        except nats.errors.Error as error:  # disconnected meanwhile: the next tick sends them
            log.warning("cannot send %d acks yet: %s", len(replies), error)
            self._replies[:0] = replies


async def send_in_progress_acks(
    nc: LakeNatsClient,
    every_s: float,
    held_replies: Callable[[], list[str]],
    stopping: Callable[[], bool],
) -> None:
    """Every `every_s`, an in-progress ack for each message held, until `stopping`.

    A message is pulled at most `pull_loop.PULL_WAIT_S` (plus routing) before it is held, so
    with `every_s` a third of `ack_wait` it gets its first in-progress ack well within it.
    """
    while not stopping():
        await asyncio.sleep(every_s)
        try:
            await nc.publish_all(held_replies(), IN_PROGRESS)
        except nats.errors.Error as error:  # reconnecting: the next round sends them
            log.warning("cannot send in-progress acks: %s", error)
