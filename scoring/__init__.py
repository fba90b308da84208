"""The evaluate stage: MMAudio av-benchmark metrics on generated vs ground-truth audio, the report and the gallery."""
