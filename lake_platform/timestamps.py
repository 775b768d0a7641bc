"""Event times are int64 nanoseconds since the Unix epoch (UTC); the spans the lake uses."""

HOUR_NS = 3_600 * 10**9
"""One hour partition, in nanoseconds."""
DAY_NS = 24 * HOUR_NS
