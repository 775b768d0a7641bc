"""The Dagster UI in a real headless Chromium: a Silver partition, its passing checks (the
inline ones and its re-verification from the stored files), and its overview (column schema
with descriptions, row count, owner). Screenshots are kept in the test's temporary folder
(CI keeps them as artifacts).

`dagster dev` runs the Bronze ingest sensor: it is pointed at the test's own nats-server, so
it can never drain a live consumer (the default `NATS_URL`) into a temporary lake.
"""

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import dagster as dg
import fsspec
import pytest

from lake_platform.definitions import defs
from lake_platform.defs.resources import LakeResource
from lake_platform.defs.silver.assets import SILVER_ASSETS
from lake_platform.defs.verification import VERIFY_CHECK, VERIFY_JOB
from lake_platform.embedded_nats import NatsServer, terminate_group
from lake_platform.ingest.jetstream import DURABLE
from lake_platform.schemas.columns import describe_column
from lake_platform.storage import LakeStore
from lake_platform_tests.bronze_files import TRADES, bronze_rows, trades, write_bronze

pytestmark = pytest.mark.slow
CHROMIUM = Path("/usr/bin/chromium")
REQUIRE_BROWSER_ENV = "LAKE_REQUIRE_BROWSER"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PARTITION = "2025-12-16-14:00"
TRADES_WRITTEN = 500
"""Silver rows of the prepared hour (its Bronze trades, none repeated)."""
SHOWN_COLUMNS = {
    name: describe_column("silver/stocks/trades", name) for name in ("ts_event_ns", "price")
}
NO_COMMUNITY_DIALOG = "window.localStorage.setItem('communityNux', JSON.stringify('1'))"
"""As if its "Join the Dagster community" dialog was dismissed: it would cover the page."""
LOOPBACK = ("-h", "127.0.0.1", "-p")
WORKSPACE = ("-w", "workspace.yaml")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def ingest_consumers(server: NatsServer) -> int:
    """How many of the ingest's durable consumers `server` has (from its monitoring port)."""
    jsz = f"http://127.0.0.1:{server.monitor_port}/jsz?consumers=true"
    with urllib.request.urlopen(jsz, timeout=5) as response:
        accounts = json.load(response).get("account_details") or []
    return sum(
        consumer["name"] == DURABLE
        for account in accounts
        for stream in account.get("stream_detail") or []
        for consumer in stream.get("consumer_detail") or []
    )


@pytest.fixture
def chromium() -> Path:
    """The Chromium binary; the test is skipped without it (unless it is required)."""
    if not CHROMIUM.exists():
        if os.environ.get(REQUIRE_BROWSER_ENV):
            pytest.fail(f"{CHROMIUM} is missing and {REQUIRE_BROWSER_ENV} is set")
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium to run this test)")
    return CHROMIUM


@pytest.fixture
def prepared_ui(tmp_path, monkeypatch, nats_server):
    """A lake with one Silver partition materialized, and `dagster dev` serving it (its
    ingest sensor reads the test's own nats-server)."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    store = LakeStore(str(tmp_path / "lake"), fsspec.filesystem("file"))
    write_bronze(store, TRADES, bronze_rows(TRADES, trades(TRADES_WRITTEN)))
    silver = [a for a in SILVER_ASSETS if a.key.path[1:] == ["stocks", "trades"]]
    with dg.DagsterInstance.get() as instance:
        result = dg.materialize(
            silver,
            instance=instance,
            partition_key=PARTITION,
            resources={"lake": LakeResource(data_root=store.root)},
        )
        assert result.success
        monkeypatch.setenv("DATA_ROOT", store.root)
        checks = {dg.AssetCheckKey(silver[0].key, VERIFY_CHECK)}
        verify = defs.resolve_job_def(VERIFY_JOB).get_subset(asset_check_selection=checks)
        verified = verify.execute_in_process(
            instance=instance, tags={"dagster/partition": PARTITION}
        )
        assert [e.passed for e in verified.get_asset_check_evaluations()] == [True]
    port = free_port()
    server = subprocess.Popen(
        [Path(sys.executable).with_name("dagster"), "dev", *LOOPBACK, str(port), *WORKSPACE],
        cwd=Path(__file__).parents[1],
        env={**os.environ, "DATA_ROOT": store.root, "NATS_URL": nats_server.url},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                urllib.request.urlopen(f"{url}/server_info", timeout=2).close()
                break
            assert server.poll() is None, "dagster dev exited"
            time.sleep(0.5)
        yield url
    finally:
        terminate_group(server, timeout=30)


def test_asset_page_shows_the_partition_and_passing_checks(
    chromium, prepared_ui, nats_server, tmp_path
):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium), args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.add_init_script(NO_COMMUNITY_DIALOG)
            page.goto(f"{prepared_ui}/assets/silver/stocks/trades")
            expect(page.get_by_text("Latest materialization")).to_be_visible(timeout=60_000)
            expect(page.get_by_text(PARTITION).first).to_be_visible(timeout=30_000)
            expect(page.get_by_text("rows_written")).to_be_visible()
            page.screenshot(path=tmp_path / "silver_overview.png")

            page.goto(f"{prepared_ui}/assets/silver/stocks/trades?view=overview")
            expect(page.get_by_text("Row count")).to_be_visible(timeout=60_000)
            expect(page.get_by_text(f"{TRADES_WRITTEN}", exact=True).first).to_be_visible()
            for column, description in SHOWN_COLUMNS.items():
                expect(page.get_by_text(column, exact=True).first).to_be_visible()
                expect(page.get_by_text(description).first).to_be_visible()
            expect(page.get_by_text("data-platform", exact=True).first).to_be_visible()
            expect(page.get_by_role("link", name="Open transform")).to_be_visible()
            page.screenshot(path=tmp_path / "silver_columns.png", full_page=True)

            page.goto(f"{prepared_ui}/assets/silver/stocks/trades?view=checks")
            expect(page.get_by_text("Checks (7)")).to_be_visible(timeout=60_000)
            for name in (
                "sorted_by_ts_event_ns",
                "event_id_unique",
                "reconciles_with_bronze",
                VERIFY_CHECK,
            ):
                expect(page.get_by_text(name).first).to_be_visible()
            expect(page.get_by_text("Succeeded")).to_have_count(7, timeout=30_000)
            page.screenshot(path=tmp_path / "silver_checks.png")
        finally:
            browser.close()
    assert (tmp_path / "silver_checks.png").stat().st_size > 0
    assert (tmp_path / "silver_columns.png").stat().st_size > 0
    deadline = time.monotonic() + 120  # the ingest sensor ticked against the test's server
    while ingest_consumers(nats_server) < 2 and time.monotonic() < deadline:
        time.sleep(1)
    assert ingest_consumers(nats_server) == 2
