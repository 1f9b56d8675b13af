"""Datasets -> samples: token ids with a segment label per token."""
