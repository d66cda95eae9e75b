"""Policies: one strategy per module, registered by short name."""
