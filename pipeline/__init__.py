"""Offline feature cache: decode videos (frames stage) and run frozen encoders into zarr."""
