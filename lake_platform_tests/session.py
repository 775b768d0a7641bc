"""A small mixed market session for ingest tests: good events of every schema, duplicates,
late events and bad messages, with what the lake must hold afterwards."""

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import nats
import polars as pl

from lake_platform.ingest.jetstream import ensure_streams
from lake_platform.schemas import BY_NAME, decode_batch
from lake_platform.storage.paths import unescape_partition_value
from lake_platform.timestamps import HOUR_NS
from lake_platform_tests.samples import SAMPLES

EARLIEST_NS = 1_704_067_200 * 10**9


def subject_of(name: str, partition_value: str) -> str:
    prefix = "levels.signals" if name == "levels.signals" else f"market.{name}"
    return f"{prefix}.{partition_value}"


@dataclass
class Session:
    """What was published, and what the lake must hold for it."""

    good: list[tuple[str, str, bytes]] = field(default_factory=list)
    bad: list[tuple[str, bytes, str]] = field(default_factory=list)

    def expected_event_ids(self) -> dict[str, set[str]]:
        """Event ids per table of the good messages."""
        return {
            table: {event_id for event_id, _ in pairs}
            for table, pairs in self.expected_partition_values().items()
        }

    def expected_partition_values(self) -> dict[str, set[tuple[str, str]]]:
        """(event id, partition value) per table of the good messages."""
        ids: dict[str, set[tuple[str, str]]] = {}
        for name in {name for name, _, _ in self.good}:
            rows = decoded_rows(name, [payload for n, _, payload in self.good if n == name])
            pairs = rows.select("event_id", BY_NAME[name].partition_column).iter_rows()
            ids[BY_NAME[name].table] = set(pairs)  # type: ignore[arg-type]
        return ids

    def good_count(self, table: str) -> int:
        return sum(1 for name, _, _ in self.good if BY_NAME[name].table == table)


def decoded_rows(schema_name: str, payloads: list[bytes]) -> pl.DataFrame:
    """The rows the platform's decoder makes of `payloads` (any event time since 2024)."""
    return decode_batch(
        BY_NAME[schema_name],
        payloads,
        received_ns=[0] * len(payloads),
        earliest_ns=EARLIEST_NS,
        now_ns=time.time_ns(),
    ).rows


def build_session(events_per_schema: int = 5) -> Session:
    """Good events of all 7 schemas (some an hour or more late), duplicates and bad ones."""
    session = Session()
    now = time.time_ns()
    for name, sample in SAMPLES.items():
        column = BY_NAME[name].partition_column
        for i in range(events_per_schema):
            late = i % 4 == 3
            message = {**sample, "ts_event_ns": now - i * 1_000_000 - (3 * HOUR_NS if late else 0)}
            value = ("SPY", "QQQ")[i % 2] if column == "symbol" else str(sample[column])
            message[column] = value
            payload = json.dumps(message).encode()
            session.good.append((name, subject_of(name, value), payload))
        repeated = session.good[-1]
        session.good.append(repeated)
    trades = SAMPLES["stocks.trades"]
    session.bad = [
        ("market.stocks.trades.SPY", b"not json", "not a JSON object"),
        ("market.stocks.trades.SPY", b"[1,2,3]", "Expected `object`"),
        (
            "market.stocks.trades.SPY",
            json.dumps({**trades, "size": True}).encode(),
            "got `bool`",
        ),
        (
            "market.options.trades.SPY",
            json.dumps({**SAMPLES["options.trades"], "right": "X"}).encode(),
            "$.right",
        ),
        (
            "market.stocks.trades.SPY",
            json.dumps({**trades, "ts_event_ns": now + 5 * HOUR_NS}).encode(),
            "outside",
        ),
        ("market.crypto.trades.BTC", json.dumps(trades).encode(), "no schema for subject"),
        (
            "levels.signals.SPY",
            json.dumps({**SAMPLES["levels.signals"], "levels": "none"}).encode(),
            "$.levels",
        ),
    ]
    return session


async def publish(url: str, session: Session) -> None:
    """Publish the session through JetStream; one message also with a repeated Msg-Id."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    await ensure_streams(js)
    for _, subject, payload in session.good:
        await js.publish(subject, payload)
    for subject, payload, _ in session.bad:
        await js.publish(subject, payload)
    name, subject, payload = session.good[0]
    for _ in range(2):
        ack = await js.publish(subject, payload, headers={"Nats-Msg-Id": "repeat-1"})
    assert ack.duplicate
    session.good.append((name, subject, payload))
    await nc.close()


def read_files(root: str, folder: str) -> dict[str, pl.DataFrame]:
    """The rows of every Parquet file under `{root}/{folder}` as stored, by path relative to
    `root`."""
    return {
        str(path.relative_to(root)): pl.read_parquet(path)
        for path in sorted(Path(root, folder).rglob("*.parquet"))
    }


def path_partition_values(path: str) -> dict[str, str]:
    """The partition column and value of a lake path's `{col}={value}` folder (not `date` or
    `hour`), decoded as a Hive-aware reader does."""
    folders = (folder.split("=", 1) for folder in path.split("/") if "=" in folder)
    return {
        column: unescape_partition_value(value)
        for column, value in folders
        if column not in ("date", "hour")
    }


def read_table(root: str, folder: str) -> pl.DataFrame:
    """Every row under `{root}/{folder}` (one table) with its partition column from the path,
    as a Hive-aware reader sees it, and the file each came from."""
    files = read_files(root, folder)
    return (
        pl.concat(
            [
                rows.with_columns(
                    pl.lit(value, pl.String()).alias(column)
                    for column, value in path_partition_values(path).items()
                ).with_columns(_file=pl.lit(path))
                for path, rows in files.items()
            ],
            how="diagonal",
        )
        if files
        else pl.DataFrame()
    )
