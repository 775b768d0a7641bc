"""Serving: the DuckDB warehouse file analysts open, refreshed after Silver/Gold commits."""
