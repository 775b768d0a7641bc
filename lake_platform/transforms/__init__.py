"""Pure transforms between tiers: Polars frames in, Polars frames out, no I/O."""
