"""Silver and Gold as Apache Iceberg tables (issue 23), plain Python (no Dagster).

The lake's own Polars writer writes the data files at their Hive paths; this package
registers them in pyiceberg's SQL catalog `lake` and replaces an hour's files in one commit:
`catalog` (the catalog and its FileIO), `identifiers` (names and locations), `schema` (a
derived table's Iceberg schema, partition spec and properties), `registry` (creating the
tables), `naming` (content-addressed file names), `data_files` (a written file as an
Iceberg `DataFile`) and `hours` (an hour's files in a snapshot, replacing them).
"""
