"""Bronze: raw events landed by the ingest."""
