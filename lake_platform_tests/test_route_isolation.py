"""Routing a pulled batch in which some messages make decoding raise: the work it takes to
find them, and what it never swallows."""

import time

import pytest

from lake_platform.ingest import route as route_module
from lake_platform.ingest.failpoints import FAILPOINT_ENV
from lake_platform.ingest.pull import PulledMessages
from lake_platform.ingest.route import route
from lake_platform_tests.test_ingest_hardening import trade

BATCH = 1_024


def batch(symbols: list[str]) -> PulledMessages:
    now = time.time_ns()
    return PulledMessages(
        subjects=[f"market.stocks.trades.{symbol}" for symbol in symbols],
        replies=[f"$JS.ACK.MARKET.lake.1.{i + 1}.{i + 1}.{now}.0" for i in range(len(symbols))],
        payloads=[trade(symbol, i) for i, symbol in enumerate(symbols)],
        headers=[None] * len(symbols),
        stream="MARKET",
    )


def counting_decodes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Sizes of the parts `route` tries to decode, in order."""
    sizes: list[int] = []
    decode = route_module._route_all

    def counted(messages, **kwargs):
        sizes.append(len(messages))
        return decode(messages, **kwargs)

    monkeypatch.setattr(route_module, "_route_all", counted)
    return sizes


def route_now(messages: PulledMessages):
    return route(messages, earliest_ns=0, now_ns=time.time_ns())


@pytest.mark.parametrize("poisoned_at", [[0], [517], [3, 900]])
def test_messages_that_panic_the_decoder_are_found_in_log2_splits(monkeypatch, poisoned_at):
    monkeypatch.setenv(FAILPOINT_ENV, "decode_panic:POISON")
    sizes = counting_decodes(monkeypatch)
    symbols = ["SPY"] * BATCH
    for index in poisoned_at:
        symbols[index] = "POISON"

    routed = route_now(batch(symbols))

    assert routed.quarantine.get_column("stream_seq").to_list() == [i + 1 for i in poisoned_at]
    assert all("PanicException" in error for error in routed.quarantine.get_column("error"))
    assert sum(rows.height for _, rows in routed.rows) == BATCH - len(poisoned_at)
    # each poison message costs two decodes per halving (10 for 1,024 messages), and each
    # level of halving decodes at most the whole batch once
    assert len(sizes) <= 1 + 2 * 10 * len(poisoned_at), sizes
    assert sum(sizes) <= BATCH * 11, sum(sizes)


def test_a_batch_without_poison_is_decoded_once(monkeypatch):
    monkeypatch.setenv(FAILPOINT_ENV, "decode_panic:POISON")
    sizes = counting_decodes(monkeypatch)
    routed = route_now(batch(["SPY"] * BATCH))
    assert sizes == [BATCH] and routed.quarantine.height == 0


@pytest.mark.parametrize("fatal", [KeyboardInterrupt, SystemExit])
def test_an_interrupt_while_decoding_is_not_taken_for_a_poison_message(monkeypatch, fatal):
    def interrupted(messages, **kwargs):
        raise fatal

    monkeypatch.setattr(route_module, "_route_all", interrupted)
    with pytest.raises(fatal):
        route_now(batch(["SPY"] * 8))
