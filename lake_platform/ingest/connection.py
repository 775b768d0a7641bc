"""Connecting to NATS with the platform settings (servers, auth, TLS, reconnects)."""

import asyncio
import re
import ssl
from collections.abc import Awaitable, Callable, Sequence

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from lake_platform.ingest.wire import RawFirstParser, RawSink
from lake_platform.settings import LakeSettings, redact_url

ErrorCallback = Callable[[Exception], Awaitable[None]]
FIRST_CONNECT_S = 10.0
_REFUSED_CREDENTIALS = re.compile(
    r"authorization violation|authentication (expired|revoked)", re.IGNORECASE
)
"""Server errors saying the credentials are wrong: retrying them can never succeed."""


class NatsUnavailableError(ConnectionError):
    """No NATS server of the configured list answered."""


class LakeNatsClient(Client):
    """nats-py's client with what the ingest needs at tens of thousands of messages a second.

    - A subject that is not UTF-8 is read with U+FFFD for each invalid byte. The server
      stores any subject bytes but whitespace; nats-py decodes them strictly, and a raw
      publisher's `market.stocks.trades.\\xff` failed its read loop on every delivery, so
      that message and every message pulled after it stayed pending. The ingest then routes
      it by its tokens like any other (docs/contract.md §2).
    - `deliver_raw`: a subscription's messages go to a plain callback as they are parsed, as
      columns, a run of them per call, without the `Msg` object, queue hop, callback task
      and header dict nats-py spends on each; the parser takes such frames itself
      (`wire.RawFirstParser`).
    - `publish_all`: one payload to many subjects (acks) in one protocol write, without the
      formatting and flush future `publish` spends on each.

    These override and call nats-py internals (`_ps`, `_parse_header_lines`,
    `_send_command`, `_flush_pending`, `Subscription._id`) of the version pinned in `uv.lock`;
    the ingest tests run them against a real nats-server.
    """

    def __init__(self) -> None:
        super().__init__()
        self._raw_sinks: dict[int, RawSink] = {}
        self._ps = RawFirstParser(self, self._raw_sinks, self.stats)

    def deliver_raw(self, subscription: Subscription, sink: RawSink) -> None:
        """Hand the messages of `subscription` to `sink` instead of its callback, as columns
        (`wire.RawMessages`), a run of messages per call."""
        self._raw_sinks[subscription._id] = sink

    def stop_raw(self, subscription: Subscription) -> None:
        self._raw_sinks.pop(subscription._id, None)

    async def publish_all(self, subjects: Sequence[str], payload: bytes = b"") -> None:
        """`publish(subject, payload)` for each of `subjects`, as one write."""
        if not subjects:
            return
        if self.is_closed:
            raise nats.errors.ConnectionClosedError
        if self.is_draining_pubs:
            raise nats.errors.ConnectionDrainingError
        tail = b" %d\r\n%s\r\n" % (len(payload), payload)
        command = b"".join([b"PUB " + subject.encode() + tail for subject in subjects])
        if not self.is_connected and (
            self._max_pending_size <= 0
            or len(command) + self._pending_data_size > self._max_pending_size
        ):
            raise nats.errors.OutboundBufferLimitError
        self.stats["out_msgs"] += len(subjects)
        self.stats["out_bytes"] += len(payload) * len(subjects)
        await self._send_command(command)
        if self._flush_queue is not None and self._flush_queue.empty():
            await self._flush_pending()

    def _build_message(
        self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: dict[str, str] | None
    ) -> Msg:
        return self.msg_class(
            subject=subject.decode(errors="replace"),
            reply=reply.decode(errors="replace"),
            data=data,
            headers=headers,
            _client=self,
            _sid=sid,
        )


async def connect(
    settings: LakeSettings, *, name: str, error_cb: ErrorCallback | None = None
) -> LakeNatsClient:
    """A connection that reconnects forever once established (a server restart is routine).

    The first connection must succeed within `FIRST_CONNECT_S`, or this fails with one clear
    error instead of retrying forever; refused credentials or an untrusted server certificate
    fail it at once (they are configuration errors that no retry can fix).
    """
    connected = False
    last_error: list[Exception] = []
    refused = asyncio.Event()

    async def on_error(error: Exception) -> None:
        if connected:
            if error_cb is not None:
                await error_cb(error)
        elif not refused.is_set():  # keep a refusal: the retries after it fail less clearly
            last_error[:] = [error]
            if _is_refusal(error):
                refused.set()

    options = _options(settings, name)
    options["error_cb"] = on_error
    client = LakeNatsClient()
    connecting = asyncio.ensure_future(client.connect(**options))  # type: ignore[arg-type]
    refusal = asyncio.ensure_future(refused.wait())
    try:
        await asyncio.wait(
            {connecting, refusal}, timeout=FIRST_CONNECT_S, return_when=asyncio.FIRST_COMPLETED
        )
    finally:  # also when the caller is cancelled: no connect attempt keeps running
        refusal.cancel()
        connecting.cancel()  # a no-op once it has finished
    # Let a cancelled attempt wind down; a cancellation of the caller still propagates.
    await asyncio.gather(connecting, return_exceptions=True)
    if not connecting.cancelled() and connecting.exception() is None:
        connected = True
        return client
    failure = None if connecting.cancelled() else connecting.exception()
    reason = last_error[0] if last_error else failure
    raise NatsUnavailableError(_failure_message(settings, reason)) from None


def _options(settings: LakeSettings, name: str) -> dict[str, object]:
    options: dict[str, object] = {
        "servers": list(settings.nats_servers),
        "name": name,
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": 0.5,
        "connect_timeout": 5,
        "allow_reconnect": True,
    }
    if settings.nats_user:
        options["user"] = settings.nats_user
        options["password"] = settings.nats_password
    if settings.nats_token:
        options["token"] = settings.nats_token
    if settings.nats_creds:
        options["user_credentials"] = settings.nats_creds
    if settings.nats_tls_ca:
        options["tls"] = ssl.create_default_context(cafile=settings.nats_tls_ca)
    return options


def _is_refusal(error: BaseException) -> bool:
    return isinstance(error, ssl.SSLCertVerificationError) or bool(
        _REFUSED_CREDENTIALS.search(str(error))
    )


def _failure_message(settings: LakeSettings, reason: BaseException | None) -> str:
    """One line naming the servers (passwords masked) and what to check; never a secret."""
    servers = ", ".join(redact_url(url) for url in settings.nats_servers)
    if isinstance(reason, ssl.SSLCertVerificationError):
        trusted = f"NATS_TLS_CA={settings.nats_tls_ca}" if settings.nats_tls_ca else "system CAs"
        return (
            f"NATS at {servers}: server certificate not trusted ({reason.verify_message}; "
            f"trusting {trusted})"
        )
    if reason is not None and _REFUSED_CREDENTIALS.search(str(reason)):
        return (
            f"NATS at {servers} refused the credentials ({reason}): check NATS_USER/"
            "NATS_PASSWORD, NATS_TOKEN, NATS_CREDS or the user in NATS_URL"
        )
    shown = (str(reason) or type(reason).__name__) if reason is not None else "timed out"
    return f"cannot connect to NATS at {servers}: {shown}"
