"""The JetStream target of a replay: its streams made or found, each subject checked.

With no subject prefix the subjects are the live ones, and `MARKET`/`SIGNALS`
are created if missing, as every publisher does (`ensure_streams`). With a prefix, when no
stream takes any subject under it, the stream `{PREFIX}` (the prefix upper-cased, each
character a stream name cannot hold as `_`: `REPLAY` for `replay`) is created on
`{prefix}.>` with the retention of the settings. Before a subject is first published, the
target is asked which stream takes it: none is a `ReplayTargetError`, not a minute of
retries.
"""

import re

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from lake_platform.ingest.jetstream import ensure_streams, retrying
from lake_platform.replay.stream import ReplayError
from lake_platform.settings import LakeSettings

STREAM_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


class ReplayTargetError(ReplayError):
    """The NATS target has no JetStream stream for a replayed subject."""


def replay_stream_name(prefix: str) -> str:
    """The stream a replay under `prefix` creates when no stream takes its subjects."""
    return STREAM_NAME_UNSAFE.sub("_", prefix).upper()


class Target:
    """The JetStream target of a replay: its streams made or found, each subject checked."""

    def __init__(self, js: JetStreamContext, settings: LakeSettings, prefix: str) -> None:
        self.js, self.settings, self.prefix = js, settings, prefix
        self.checked: set[str] = set()

    async def prepare(self) -> None:
        """The live streams (no prefix), or the prefix's stream when nothing takes it."""
        if not self.prefix:
            await ensure_streams(self.js, self.settings)
            return
        if await self._stream_of(f"{self.prefix}.>") is None:
            name = replay_stream_name(self.prefix)
            await ensure_streams(self.js, self.settings, {name: f"{self.prefix}.>"})

    async def check(self, chunk_subjects: frozenset[str]) -> None:
        """A `ReplayTargetError` when no stream takes one of the subjects."""
        for subject in chunk_subjects - self.checked:
            if await self._stream_of(subject) is None:
                hint = (
                    f"create a stream on {self.prefix}.> or choose another --subject-prefix"
                    if self.prefix
                    else "a stream on its first tokens (MARKET on market.>, SIGNALS on levels.>)"
                )
                raise ReplayTargetError(f"no JetStream stream takes subject {subject}: {hint}")
            self.checked.add(subject)

    async def _stream_of(self, subject: str) -> str | None:
        try:
            return await retrying(
                f"stream of {subject}", self.js.find_stream_name_by_subject, subject
            )
        except NotFoundError:
            return None
