"""Distributed helpers, checkpoints, logs and seeding."""
