"""Offline replay and simulation scripts built on the production use-cases."""
