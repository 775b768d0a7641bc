"""Automation of an hourly table that reads the hour before too (the as-of tables).

A synthetic graph as the as-of tables are declared: `enriched` reads the same and the
previous hour of `quotes` and `trades` (a `TimeWindowPartitionMapping` with an offset), and
follows `follows_upstream` with `trades` as its same-hour input. Three hours: late quotes of
the middle one re-run it and the next, not the first; the first hour runs without the hour
before it; an hour before that failed its blocking check, or was never checked, holds the hour.
"""

import datetime as dt

import dagster as dg
import pytest

from lake_platform.defs.automation import follows_upstream

NOW = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)
HOURS = [NOW - dt.timedelta(hours=offset) for offset in (4, 3, 2)]
FIRST, MIDDLE, LAST = (hour.strftime("%Y-%m-%d-%H:00") for hour in HOURS)
QUOTES, TRADES, ENRICHED = dg.AssetKey("quotes"), dg.AssetKey("trades"), dg.AssetKey("enriched")
HOUR_AND_HOUR_BEFORE = dg.TimeWindowPartitionMapping(
    start_offset=-1, end_offset=0, allow_nonexistent_upstream_partitions=True
)
STARTS = {
    "hour_before_missing": HOURS[0] - dt.timedelta(days=1),
    "hour_before_nonexistent": HOURS[0],
}
"""Where the partitions start: the first hour's previous hour exists but was never
materialized, or lies before the first partition."""


class QuotesConfig(dg.Config):
    passes: bool = True


def graph(start: dt.datetime) -> dg.Definitions:
    hourly = dg.HourlyPartitionsDefinition(start_date=start)

    @dg.asset(
        key=QUOTES,
        partitions_def=hourly,
        check_specs=[
            dg.AssetCheckSpec("valid", asset=QUOTES, blocking=True, partitions_def=hourly)
        ],
    )
    def quotes(config: QuotesConfig) -> dg.MaterializeResult:
        return dg.MaterializeResult(
            check_results=[dg.AssetCheckResult(check_name="valid", passed=config.passes)]
        )

    @dg.asset(key=TRADES, partitions_def=hourly)
    def trades() -> None:
        return None

    @dg.asset(
        key=ENRICHED,
        partitions_def=hourly,
        deps=[
            dg.AssetDep(QUOTES, partition_mapping=HOUR_AND_HOUR_BEFORE),
            dg.AssetDep(TRADES, partition_mapping=HOUR_AND_HOUR_BEFORE),
        ],
        automation_condition=follows_upstream(48, same_hour_input=TRADES),
    )
    def enriched() -> None:
        return None

    return dg.Definitions(assets=[quotes, trades, enriched])


class Lake:
    """The synthetic graph on a test instance: materializations and successive evaluations."""

    def __init__(self, defs: dg.Definitions, instance: dg.DagsterInstance) -> None:
        self.defs = defs
        self.instance = instance
        self.cursor = None

    def materialize(self, key: dg.AssetKey, *partitions: str, passes: bool = True) -> None:
        config = {"ops": {"quotes": {"config": {"passes": passes}}}} if key == QUOTES else None
        for partition in partitions:
            result = dg.materialize(
                [self.defs.get_assets_def(key)],
                instance=self.instance,
                partition_key=partition,
                run_config=config,
                raise_on_error=False,
            )
            assert result.success is passes
            assert result.asset_materializations_for_node(key.path[-1])

    def requested(self) -> set[str]:
        result = dg.evaluate_automation_conditions(
            defs=self.defs, instance=self.instance, cursor=self.cursor
        )
        self.cursor = result.cursor
        return result.get_requested_partitions(ENRICHED)


@pytest.fixture(params=STARTS.values(), ids=STARTS.keys())
def lake(request):
    with dg.instance_for_test() as instance:
        yield Lake(graph(request.param), instance)


def test_late_quotes_of_the_middle_hour_rerun_it_and_the_next_only(lake):
    lake.materialize(QUOTES, FIRST, MIDDLE, LAST)
    lake.materialize(TRADES, FIRST, MIDDLE, LAST)
    assert lake.requested() == {FIRST, MIDDLE, LAST}
    lake.materialize(ENRICHED, FIRST, MIDDLE, LAST)
    assert lake.requested() == set(), "settled"
    lake.materialize(QUOTES, MIDDLE)
    assert lake.requested() == {MIDDLE, LAST}


def test_an_hour_waits_for_its_same_hour_input_only(lake):
    """The first hour runs without the hour before; the middle one waits for its trades; the
    last runs without quotes of its own hour (the middle hour's prevail)."""
    lake.materialize(QUOTES, FIRST, MIDDLE)
    lake.materialize(TRADES, FIRST, LAST)
    assert lake.requested() == {FIRST, LAST}
    lake.materialize(TRADES, MIDDLE)
    assert lake.requested() == {FIRST, MIDDLE, LAST}


def test_quotes_of_the_hour_before_failing_a_blocking_check_hold_the_hour(lake):
    lake.materialize(QUOTES, FIRST, LAST)
    lake.materialize(QUOTES, MIDDLE, passes=False)
    lake.materialize(TRADES, FIRST, MIDDLE, LAST)
    assert lake.requested() == {FIRST}
    lake.materialize(ENRICHED, FIRST)
    lake.materialize(QUOTES, MIDDLE)
    assert lake.requested() == {MIDDLE, LAST}


def test_quotes_of_the_hour_before_never_checked_hold_the_hour(lake):
    lake.materialize(QUOTES, FIRST, LAST)
    lake.materialize(TRADES, FIRST, MIDDLE, LAST)
    lake.instance.report_runless_asset_event(
        dg.AssetMaterialization(asset_key=QUOTES, partition=MIDDLE)
    )
    assert lake.requested() == {FIRST}
