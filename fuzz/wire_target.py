"""Fuzz target: `wire.RawFirstParser` against nats-py's own parser, frame for frame.

Input: any bytes, read by `wire_differential.build_stream` as the choices of a stream of
NATS frames (`MSG`/`HMSG` for raw-delivery and other subscriptions, `INFO`, `PING`, `PONG`,
`+OK`, `-ERR`, well-formed or not: bad sizes and sids, odd whitespace, unknown lines, lines
longer than `MAX_CONTROL_LINE_SIZE` with and without their CRLF, a last frame cut short).
nats-py's parser reads the stream one byte at a time (the reference); `RawFirstParser` reads
it all at once, byte by byte, split in two at every byte boundary and in random reads (and so
does nats-py's parser when the stream is well-formed). All must yield the same messages, by
the same route (raw sids to their sink), the same client calls, the same exception after the
same events, and the same bytes left buffered (`wire_differential.check_stream`).

Long run (on a copy of the corpus: libFuzzer adds what it finds to the first folder):

    cp -r fuzz/corpus/wire /tmp/wire-corpus
    .venv/bin/python fuzz/wire_target.py /tmp/wire-corpus -max_total_time=3600

or every target at once: `.venv/bin/python -m fuzz.run --seconds 3600`. A crash leaves its
input as `crash-…`; replay it with `.venv/bin/python fuzz/wire_target.py crash-…`.
"""

import sys

import atheris

with atheris.instrument_imports(include=["lake_platform", "nats.protocol"]):
    from wire_differential import build_stream, check_stream


def test_one_input(data: bytes) -> None:
    check_stream(build_stream(data), seed=len(data))


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
