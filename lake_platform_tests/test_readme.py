"""Every code block of README.md and docs/*.md runs, against a small real lake where the README
puts it.

The lake is built in a scratch folder as a user's would be: `data/lake` (the default
`DATA_ROOT`) holding an hour of Bronze trades and level signals, with their Silver and Gold
materialized by the real assets, `.dagster_home/` as `make` creates it, and `.venv` (this
test's environment). Python and SQL blocks run in that folder; shell blocks run there with no
lake or Dagster variable set, after the README's setup block (which activates `.venv` and sets
`DAGSTER_HOME`). The markers are described in `readme_blocks.py`.
"""

import os
import re
import shutil
import sys
from pathlib import Path

import dagster as dg
import fsspec
import pytest

from lake_platform.defs.gold.assets import GOLD_ASSETS
from lake_platform.defs.resources import LakeResource
from lake_platform.defs.silver.assets import SILVER_ASSETS
from lake_platform.schemas import BY_NAME
from lake_platform.storage import LakeStore
from lake_platform_tests.bronze_files import HOUR_NS, TRADES, bronze_rows, trades, write_bronze
from lake_platform_tests.readme_blocks import (
    CODE_LANGUAGES,
    LANGUAGES,
    Block,
    fenced_blocks,
    run_bash,
    run_python,
    run_sql,
)
from lake_platform_tests.samples import SAMPLES

REPOSITORY = Path(__file__).resolve().parents[1]
README = REPOSITORY / "README.md"
DOCUMENTS = [README, REPOSITORY / "CHANGELOG.md", *sorted((REPOSITORY / "docs").glob("*.md"))]
"""The Markdown files whose code blocks run and whose links must resolve."""
BLOCKS = [
    block
    for document in DOCUMENTS
    for block in fenced_blocks(document.read_text(), str(document.relative_to(REPOSITORY)))
]
PARTITION = "2025-12-16-14:00"
MAX_NOT_RUN = 2  # `make run`/`make test`, and the S3 readers (run by test_readers.py)
MAX_README_LINES = 250
MAX_SLOW = 3
SETUP = "".join(block.code for block in BLOCKS if block.marker == "setup")
SETTINGS_PREFIXES = ("DATA_ROOT", "USE_S3", "S3_", "NATS_", "LAKE_", "BRONZE_", "GOLD_", "DAGSTER_")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scratch folder laid out like the repository: `data/lake` (Bronze, Silver and Gold of
    one hour), `.dagster_home/` and `.venv`."""
    root = tmp_path_factory.mktemp("readme")
    store = LakeStore(str(root / "data" / "lake"), fsspec.filesystem("file"))
    write_bronze(store, TRADES, bronze_rows(TRADES, trades(300)))
    signals = BY_NAME["levels.signals"]
    sample = SAMPLES["levels.signals"]
    messages = [{**sample, "ts_event_ns": HOUR_NS + i * 10**9} for i in range(5)]
    write_bronze(store, signals, bronze_rows(signals, messages))
    assets = [a for a in SILVER_ASSETS if a.key.path[1:] == ["stocks", "trades"]] + GOLD_ASSETS
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            assets,
            instance=instance,
            partition_key=PARTITION,
            resources={"lake": LakeResource(data_root=store.root)},
        )
    assert result.success
    home = root / ".dagster_home"
    home.mkdir()
    shutil.copy(REPOSITORY / "dagster.yaml", home / "dagster.yaml")
    (root / ".venv").symlink_to(sys.prefix)
    return root


def shell_env() -> dict[str, str]:
    """This process's environment without lake, NATS or Dagster settings."""
    return {k: v for k, v in os.environ.items() if not k.startswith(SETTINGS_PREFIXES)}


def run_block(block: Block, workdir: Path, timeout_s: float) -> None:
    """Run one code block in `workdir` (the caller has made it the current folder)."""
    if block.language == "bash":
        run_bash(block, SETUP, workdir, shell_env(), timeout_s)
    elif block.language == "python":
        run_python(block)
    else:
        run_sql(block)


def code_blocks(marker: str) -> list:
    """Test parameters: the code blocks carrying `marker` ("" for unmarked ones)."""
    return [
        pytest.param(block, id=block.name)
        for block in BLOCKS
        if block.language in CODE_LANGUAGES and block.marker == marker
    ]


def test_blocks_name_their_language_and_skips_are_few_and_explained():
    unknown = [block.name for block in BLOCKS if block.language not in LANGUAGES]
    assert not unknown, f"blocks without a known language: {unknown}"
    assert all(block.reason for block in BLOCKS if block.marker), "a marker without a reason"
    marked_text = [block.name for block in BLOCKS if block.marker and block.language == "text"]
    assert not marked_text, f"markers on text blocks: {marked_text}"
    assert len([block for block in BLOCKS if block.marker == "not run"]) <= MAX_NOT_RUN
    assert len([block for block in BLOCKS if block.marker == "slow"]) <= MAX_SLOW
    setup = [block.language for block in BLOCKS if block.marker == "setup"]
    assert setup == ["bash"], "exactly one setup block, a shell block"
    run = {block.language for block in BLOCKS if block.marker in ("", "slow")}
    assert set(CODE_LANGUAGES) <= run


def test_readme_is_a_short_front_door_pointing_to_every_doc():
    text = README.read_text()
    assert len(text.splitlines()) <= MAX_README_LINES
    for document in DOCUMENTS[1:]:
        assert str(document.relative_to(REPOSITORY)) in text, f"README does not link {document}"


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: path.name)
def test_documents_point_only_inside_the_repository(document: Path):
    text = document.read_text()
    assert "shared/" not in text and "INTERFACES" not in text
    assert not re.search(r"\b[Ii]ssues? \d+", text), f"{document.name} names an issue number"
    for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", text):
        assert (document.parent / target).exists(), f"{document.name} links to missing {target}"


@pytest.mark.parametrize("block", code_blocks(""))
def test_readme_block_runs(block: Block, workdir: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(workdir)
    run_block(block, workdir, timeout_s=120)


@pytest.mark.slow
@pytest.mark.parametrize("block", code_blocks("slow"))
def test_slow_readme_block_runs(block: Block, workdir: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(workdir)
    run_block(block, workdir, timeout_s=300)
