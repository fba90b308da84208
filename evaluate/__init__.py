"""Evaluation: the paper's metrics (MMAudio av-benchmark protocol), report and gallery."""
