"""Gold: derived, ML-ready tables."""
