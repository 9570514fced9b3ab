"""Fast paths for one architecture (used by the model modules that run it)."""
