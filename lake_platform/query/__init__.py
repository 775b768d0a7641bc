"""Querying the lake: every table as a DuckDB view (`views`), `lake-platform sql`'s output
(`output`) and the Python read API (`read`)."""
