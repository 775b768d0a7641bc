"""Decode throughput: `decode_batch` against msgspec's bare decode of the same batches.

The baseline is the floor for any validating decoder in Python (parse + validate, no frame);
`decode_batch` adds the Arrow frame, the clock checks and the `event_id` MD5.

    uv run python benchmarks/decode.py [--events 200000] [--batch 1000]
"""

import argparse
import json
import time

import msgspec

from lake_platform.schemas import BY_NAME, decode_batch

TS = 1_765_895_400_000_000_000


def trade_payloads(count: int) -> list[bytes]:
    return [
        json.dumps(
            {
                "ts_event_ns": TS + i * 1_000,
                "symbol": ("SPY", "QQQ", "AAPL")[i % 3],
                "price": 681.0 + (i % 100) / 100,
                "size": 100 + i % 7,
                "exchange": i % 20,
                "conditions": [14, 41],
                "seq": i,
            }
        ).encode()
        for i in range(count)
    ]


def timed(run, batches) -> float:
    start = time.perf_counter()
    for batch in batches:
        run(batch)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=1_000)
    args = parser.parse_args()
    payloads = trade_payloads(args.events)
    batches = [payloads[i : i + args.batch] for i in range(0, len(payloads), args.batch)]
    schema = BY_NAME["stocks.trades"]
    received = list(range(args.batch))
    baseline = msgspec.json.Decoder(list[dict])

    def bare(batch: list[bytes]) -> None:
        baseline.decode(b"[" + b",".join(batch) + b"]")

    def full(batch: list[bytes]) -> None:
        decode_batch(schema, batch, received_ns=received[: len(batch)], earliest_ns=0, now_ns=TS)

    full(batches[0])
    bare_s, full_s = timed(bare, batches), timed(full, batches)
    print(f"events: {args.events:,} in batches of {args.batch:,}")
    print(f"msgspec bare decode: {args.events / bare_s:>12,.0f} events/s")
    print(f"decode_batch:        {args.events / full_s:>12,.0f} events/s")
    print(f"ratio decode_batch / bare: {bare_s / full_s:.2f}")


if __name__ == "__main__":
    main()
