"""`lake-platform tag NAME`: tag the current snapshot of every Silver and Gold table (or one).

A tag is a version that never expires (a training set, a release), read back with
`--as-of NAME` or by any Iceberg reader. Every table is checked before any is tagged, so a
name already taken elsewhere (without `--replace`) tags none; a clash that appears meanwhile
(another `tag` at once) stops at that table, the ones before it tagged.
"""

from lake_platform.derived.registry import chosen_tables
from lake_platform.settings import LakeSettings
from lake_platform.tables.identifiers import table_identifier
from lake_platform.tables.lake_tables import open_lake_tables
from lake_platform.tables.tags import TagError, check_tag_name, tag_current, tags


def run_tag(name: str, table: str | None, replace: bool) -> int:
    """Tag the tables' current snapshots `name`; one line per table."""
    check_tag_name(name)
    chosen = chosen_tables(table)
    tables = open_lake_tables(LakeSettings.from_env())
    loaded = {derived.target: tables.table(derived) for derived in chosen}
    if not replace:
        for target, iceberg in loaded.items():
            current = iceberg.current_snapshot()
            tagged = tags(iceberg).get(name)
            if current is not None and tagged not in (None, current.snapshot_id):
                raise TagError(
                    f"{table_identifier(target)}: tag {name!r} already names snapshot {tagged} "
                    "(--replace moves it to the current snapshot); no table tagged"
                )
    for target, iceberg in loaded.items():
        snapshot_id = tag_current(iceberg, name, replace=replace)
        identifier = table_identifier(target)
        if snapshot_id is None:
            print(f"{identifier}: no snapshot, not tagged")
        else:
            print(f"tagged {identifier} snapshot {snapshot_id} as {name}")
    return 0
