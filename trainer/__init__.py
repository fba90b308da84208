"""Mapper trainer: time-aligned fusion + GPT-2 mapper, trained on the cached tensors only."""
