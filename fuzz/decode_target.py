"""Fuzz target: `decode_batch` on arbitrary payloads, bulk and one-by-one paths alike.

Input: the first byte picks the schema, the rest is split on 0x1E (record separator) into
the payloads of one batch (at most `MAX_PAYLOADS`). Each input is decoded twice: as is (the
bulk path whenever every payload is a valid message) and with one malformed payload appended,
which forces the one-by-one path for the whole batch. Both must account for every payload (a
row or a rejection with a reason, never an exception) and agree row for row and reason for
reason. Run: `python fuzz/decode_target.py fuzz/corpus/decode -atheris_runs=N` (copy the
corpus first: libFuzzer adds the inputs it finds to the first corpus folder).
"""

import sys

import atheris

with atheris.instrument_imports(include=["lake_platform"]):
    from lake_platform.schemas import SCHEMAS, decode_batch
    from lake_platform.schemas.decode import DecodedBatch

SEPARATOR = b"\x1e"
MAX_PAYLOADS = 8
FORCE_ONE_BY_ONE = b"\x00 not JSON"
"""A payload no JSON decoder accepts: appended, it sends the whole batch down the slow path."""
EARLIEST_NS = 1_704_067_200 * 10**9  # 2024-01-01T00:00Z
NOW_NS = 1_765_895_460 * 10**9  # 2025-12-16T14:31Z, one minute after the seed samples


def split_input(data: bytes) -> tuple[int, list[bytes]]:
    """(schema index, payloads) of one fuzzer input."""
    if not data:
        return 0, [b""]
    return data[0] % len(SCHEMAS), data[1:].split(SEPARATOR)[:MAX_PAYLOADS]


def decode(schema_index: int, payloads: list[bytes]) -> DecodedBatch:
    return decode_batch(
        SCHEMAS[schema_index],
        payloads,
        received_ns=[NOW_NS - 1_000 + i for i in range(len(payloads))],
        earliest_ns=EARLIEST_NS,
        now_ns=NOW_NS,
    )


def check_accounts_for_every_payload(batch: DecodedBatch, count: int) -> None:
    rejected = [rejection.index for rejection in batch.rejections]
    assert sorted(batch.positions + rejected) == list(range(count)), (batch.positions, rejected)
    assert batch.rows.height == len(batch.positions)
    assert all(rejection.reason for rejection in batch.rejections)


def test_one_input(data: bytes) -> None:
    schema_index, payloads = split_input(data)
    bulk = decode(schema_index, payloads)
    check_accounts_for_every_payload(bulk, len(payloads))
    forced = decode(schema_index, [*payloads, FORCE_ONE_BY_ONE])
    check_accounts_for_every_payload(forced, len(payloads) + 1)
    assert forced.positions == bulk.positions
    assert [(r.index, r.reason) for r in forced.rejections[:-1]] == [
        (r.index, r.reason) for r in bulk.rejections
    ]
    assert forced.rejections[-1].index == len(payloads)
    assert forced.rows.equals(bulk.rows), (forced.rows, bulk.rows)
    assert forced.unknown_field_messages == bulk.unknown_field_messages


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
