"""Measurement cores: outcomes inside windows, uplift statistics (pure numpy/scipy)."""
