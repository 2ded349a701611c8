"""Builders of checkpoints in the exact upstream on-disk layout (tiny and full size)."""
