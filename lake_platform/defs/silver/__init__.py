"""Silver: deduplicated, event-time-sorted, typed tables."""
