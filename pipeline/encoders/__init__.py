"""Frozen encoders: CAVP, TimeChat visual path, pooled AudioMAE."""
