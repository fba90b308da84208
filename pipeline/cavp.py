"""Stage ``cavp``: run the frozen cavp encoder (frozen/cavp.py) over the frames stage's shards into the cache."""

from pipeline.encode import read_record, run_encoder_stage
from v2a.runner import StageContext

__all__ = ["run", "read_record"]


def run(ctx: StageContext) -> None:
    run_encoder_stage(ctx, "frozen.cavp")
