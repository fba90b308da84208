"""Stage ``timechat``: run the frozen timechat encoder (frozen/timechat.py) over the frames stage's shards into the cache."""

from pipeline.encode import read_record, run_encoder_stage
from v2a.runner import StageContext

__all__ = ["run", "read_record"]


def run(ctx: StageContext) -> None:
    run_encoder_stage(ctx, "frozen.timechat")
