"""Spark reads every Bronze table of a lake exactly: `spark.read.parquet(table_dir)` in local
mode, compared with the Parquet footers of the same files. Silver and Gold are Iceberg tables:
a folder read would also see their retained older versions, so Spark reads them through the
catalog (docs/readers.md, "Spark"; the Iceberg runtime jar cannot be installed offline here).

Not part of `make test`: pyspark (~400 MB) is not in the locked environment. Run it with
Java 17 on the PATH:

    uv run --with pyspark==4.3.0 python compat/spark_read.py              # the tricky lake
    uv run --with pyspark==4.3.0 python compat/spark_read.py --lake data/lake

Without `--lake` it builds, in a scratch folder, the lake of `lake_platform_tests/tricky_lake.py`
(partition values `../evil`, `A/B`, `0700`, `true`, … in every tier and table, Bronze files of
both layouts). For every table folder it prints one Markdown row: files and rows by the
footers; whether Spark's row counts per (partition value, date, hour) equal the footers' (the
values decoded from the folder names) with partition type inference off, as docs/readers.md says;
whether every row's `date`/`hour` is that of its `ts_event_ns`; whether each partition-value
folder read alone (`basePath` set) gives back its value and exactly its footers' rows; and how
many values Spark's default inference changes in such a read (`0700` → 700). Local lakes only
(Spark on S3 needs the hadoop-aws jars).
"""

import argparse
import sys
import tempfile
from collections import Counter
from pathlib import Path

import fsspec
import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from lake_platform.schemas import SCHEMAS
from lake_platform.storage import LakeStore
from lake_platform.storage.paths import folder_partition_value

INFERENCE = "spark.sql.sources.partitionColumnTypeInference.enabled"
Key = tuple[str, str, str]
"""(partition value as published, date, hour) of a folder."""


def table_folders() -> dict[str, str]:
    """Every Bronze table folder of the lake, with its partition column."""
    return {f"bronze/{schema.table}": schema.partition_column for schema in SCHEMAS}


def footer_rows(table_dir: Path) -> tuple[Counter[Key], Counter[str], int]:
    """Rows per (value, date, hour) and per value folder by the footers, and the file count."""
    by_key: Counter[Key] = Counter()
    by_folder: Counter[str] = Counter()
    files = 0
    for path in sorted(table_dir.rglob("*.parquet")):
        if path.name.startswith("."):
            continue
        value_folder, date, hour = path.relative_to(table_dir).parts[:3]
        rows = pq.read_metadata(path).num_rows
        key = (folder_partition_value(value_folder), date.split("=")[1], hour.split("=")[1])
        by_key[key] += rows
        by_folder[value_folder] += rows
        files += 1
    return by_key, by_folder, files


def spark_rows(frame: DataFrame, column: str) -> Counter[Key]:
    """Spark's rows per (value, date, hour)."""
    counts = frame.groupBy(column, "date", "hour").count().collect()
    return Counter({(row[0], row[1], row[2]): row[3] for row in counts})


def wrong_event_hours(frame: DataFrame) -> int:
    """Rows whose `date`/`hour` (strings) are not those of their `ts_event_ns` (UTC)."""
    event_time = F.timestamp_micros(F.floor(F.col("ts_event_ns") / 1000).cast("long"))
    return frame.filter(
        (F.col("date") != F.date_format(event_time, "yyyy-MM-dd"))
        | (F.col("hour") != F.date_format(event_time, "HH"))
    ).count()


def check_table(
    spark: SparkSession, root: Path, folder: str, column: str
) -> tuple[list[str], dict[str, object]] | None:
    """One result row for a table folder, and the values Spark's default inference changes
    (published value → Spark's) when a folder is read alone; None without such a table."""
    table_dir = root / folder
    footers, per_folder, files = footer_rows(table_dir)
    if not files:
        return None
    spark.conf.set(INFERENCE, "false")
    frame = spark.read.parquet(str(table_dir))
    read = spark_rows(frame, column)
    wrong_hours = wrong_event_hours(frame)
    alone = {
        value_folder: read_alone(spark, table_dir, value_folder) for value_folder in per_folder
    }
    exact_alone = sum(
        alone[value_folder] == (folder_partition_value(value_folder), rows)
        for value_folder, rows in per_folder.items()
    )
    spark.conf.set(INFERENCE, "true")
    inferred = {folder: read_alone(spark, table_dir, folder)[0] for folder in per_folder}
    changed = {
        folder_partition_value(folder): value
        for folder, value in inferred.items()
        if value != folder_partition_value(folder)
    }
    row = [
        f"`{folder}`",
        str(files),
        str(sum(footers.values())),
        str(sum(read.values())),
        "yes" if read == footers else f"**no** ({len(set(read) ^ set(footers))} keys differ)",
        "yes" if wrong_hours == 0 else f"**no** ({wrong_hours} rows)",
        f"{exact_alone} of {len(per_folder)}",
        f"{len(changed)} of {len(per_folder)}",
    ]
    return row, changed


def read_alone(spark: SparkSession, table_dir: Path, value_folder: str) -> tuple[object, int]:
    """One partition-value folder read alone (`basePath` set): its value as Spark gives it,
    and its rows."""
    frame = spark.read.option("basePath", str(table_dir)).parquet(str(table_dir / value_folder))
    column = value_folder.split("=")[0]
    values = {row[0] for row in frame.select(column).distinct().collect()}
    return (values.pop() if len(values) == 1 else values), frame.count()


HEADER = [
    "table",
    "files",
    "rows (footers)",
    "rows (Spark)",
    "rows per value/date/hour = footers",
    "date/hour = ts_event_ns",
    "value folders read alone: value and rows exact",
    "same, values changed by Spark's default inference",
]


def markdown(rows: list[list[str]]) -> str:
    lines = [HEADER, ["---"] * len(HEADER), *rows]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lake", type=Path, help="a local lake root (default: the tricky lake)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="spark-read-") as scratch:
        root = args.lake
        if root is None:
            from lake_platform_tests.tricky_lake import write_lake

            root = Path(scratch, "lake")
            write_lake(LakeStore(str(root), fsspec.filesystem("file")))
        spark = (
            SparkSession.builder.master("local[2]")
            .config("spark.sql.session.timeZone", "UTC")
            .config("spark.ui.enabled", "false")
            .config("spark.driver.host", "127.0.0.1")
            .config("spark.driver.bindAddress", "127.0.0.1")
            .getOrCreate()
        )
        spark.sparkContext.setLogLevel("ERROR")
        version = spark.version
        try:
            results = [
                result
                for folder, column in table_folders().items()
                if (result := check_table(spark, root.resolve(), folder, column)) is not None
            ]
        finally:
            spark.stop()
    rows = [row for row, _ in results]
    changed = {value: spark_value for _, values in results for value, spark_value in values.items()}
    print(f"Spark {version} (local mode), lake {root if args.lake else 'tricky_lake.py'}")
    print(markdown(rows))
    changes = ", ".join(f"`{k}` → `{v!r}`" for k, v in sorted(changed.items()))
    print(f"\nSpark's default inference, a value folder read alone: {changes or 'nothing'}")
    exact = all(
        row[4] == row[5] == "yes" and row[6].split()[0] == row[6].split()[-1] for row in rows
    )
    return 0 if rows and exact else 1


if __name__ == "__main__":
    sys.exit(main())
