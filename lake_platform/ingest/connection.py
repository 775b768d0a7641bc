"""Connecting to NATS with the platform settings (servers, auth, TLS, reconnects)."""

import asyncio
import ssl
from collections.abc import Awaitable, Callable

from nats.aio.client import Client
from nats.aio.msg import Msg

from lake_platform.settings import LakeSettings, redact_url

ErrorCallback = Callable[[Exception], Awaitable[None]]
FIRST_CONNECT_S = 10.0


class NatsUnavailableError(ConnectionError):
    """No NATS server of the configured list answered."""


class LenientSubjectClient(Client):
    """A client that reads a subject that is not UTF-8 with U+FFFD for each invalid byte.

    The server stores any subject bytes but whitespace; nats-py decodes them strictly, and a
    raw publisher's `market.stocks.trades.\\xff` failed its read loop on every delivery, so
    that message and every message pulled after it stayed pending. The ingest then routes it
    by its tokens like any other (docs/contract.md §2).
    """

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
) -> Client:
    """A connection that reconnects forever once established (a server restart is routine).

    The first connection must succeed within `FIRST_CONNECT_S`, or this fails with one clear
    error instead of retrying forever.
    """
    connected = False
    last_error: list[Exception] = []

    async def on_error(error: Exception) -> None:
        if not connected:
            last_error[:] = [error]
        elif error_cb is not None:
            await error_cb(error)

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
    options["error_cb"] = on_error
    client = LenientSubjectClient()
    try:
        await asyncio.wait_for(client.connect(**options), FIRST_CONNECT_S)  # type: ignore[arg-type]
    except Exception as error:
        servers = ", ".join(redact_url(url) for url in settings.nats_servers)
        reason = last_error[0] if last_error else error
        raise NatsUnavailableError(
            f"cannot connect to NATS at {servers}: {reason or type(reason).__name__}"
        ) from None
    connected = True
    return client
