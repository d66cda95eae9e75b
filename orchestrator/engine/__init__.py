"""Pure cores of the daily run: numpy in, numpy out; clock and seed are arguments."""
