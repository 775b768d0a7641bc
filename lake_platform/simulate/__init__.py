"""A synthetic market session (the demo's and `lake-platform publish`'s data) and its publisher."""
