"""ARC test-time inference: generate answers over augmented views, vote, submit, score."""
