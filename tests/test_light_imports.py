"""Importing a stage module, and so validating a configuration (v2a/schema.py imports every stage's module for its
``Params``/``Runtime``), imports none of the heavy libraries: they are imported by the functions that need them."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "transformers", "diffusers", "zarr")
STAGE_MODULES = ("pipeline.frames", "pipeline.cavp", "pipeline.timechat", "pipeline.audiomae", "pipeline.clip",
                 "pipeline.clap", "trainer.stage", "infer.stage", "scoring.stage", "lab.dynamics")
LIGHT_PARAMS = ("frozen.names", "infer.params", "scoring.params")


def heavy_after(code: str) -> list[str]:
    """The heavy modules in ``sys.modules`` after running ``code`` in a fresh interpreter at the repository root."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_stage_modules_import_no_heavy_library():
    assert heavy_after(f"import {', '.join(STAGE_MODULES + LIGHT_PARAMS)}") == []


def test_frames_workers_import_no_heavy_library():
    """What a frames worker runs (decode, resample, store): torch would cost each worker seconds to import."""
    assert heavy_after("import pipeline.media, pipeline.framestore, frozen.resample_np") == []


def test_stages_yaml_names_exactly_these_modules():
    import yaml

    raw = yaml.safe_load((REPO / "stages.yaml").read_text())
    assert {s["module"] for s in raw["stages"].values()} == set(STAGE_MODULES)


@pytest.mark.parametrize("overlays", [[], ["demo"]], ids=["packaged", "packaged+demo"])
def test_validating_the_packaged_config_imports_no_heavy_library(overlays, tmp_path):
    code = ("from pathlib import Path\n"
            "from v2a.config import load_config\n"
            "from v2a.defaults import choose_config\n"
            f"choice = choose_config({overlays!r}, cwd=Path({str(tmp_path)!r}))\n"
            "assert choice.files[0].parent.name == 'configs', choice.files  # the packaged stages.yaml\n"
            "cfg = load_config(choice.files, root=choice.root)\n"
            "assert cfg.stage('cavp').params['filename'] and cfg.stage('generate').params['scheduler']\n")
    assert heavy_after(code) == []


def test_frozen_names_are_the_frozen_modules_constants():
    from frozen import audiomae, cavp, clap, clip, names, timechat

    assert cavp.HUB_FILENAME == names.CAVP_HUB_FILENAME and cavp.IMAGE_SIZE == names.CAVP_IMAGE_SIZE
    assert cavp.CHUNK_FRAMES == names.CAVP_CHUNK_FRAMES
    assert (timechat.IMAGE_SIZE, timechat.FRAME_BATCH) == (names.TIMECHAT_IMAGE_SIZE, names.TIMECHAT_FRAME_BATCH)
    assert timechat.TimeChatConfig().max_frame_pos == names.TIMECHAT_FRAME_POSITIONS
    assert audiomae.CLIP_SAMPLES == names.AUDIOMAE_CLIP_SAMPLES
    assert (audiomae.HUB_REPO, audiomae.HUB_FILENAME, audiomae.FULL_PREFIX) == (
        names.AUDIOMAE_HUB_REPO, names.AUDIOMAE_HUB_FILENAME, names.AUDIOMAE_FULL_PREFIX)
    assert clip.DEFAULT_CHECKPOINT == names.CLIP_DEFAULT_CHECKPOINT
    assert clap.DEFAULT_CHECKPOINT == names.CLAP_DEFAULT_CHECKPOINT


def test_stage_defaults_are_the_frozen_modules_constants():
    import pipeline.audiomae
    import pipeline.cavp
    import pipeline.clap
    import pipeline.clip
    import pipeline.timechat
    from frozen import audiomae, cavp, clap, clip, timechat

    p = pipeline.cavp.Params()
    assert (p.filename, p.chunk_frames) == (cavp.HUB_FILENAME, cavp.CHUNK_FRAMES)
    assert pipeline.timechat.Params().frame_batch == timechat.FRAME_BATCH
    p = pipeline.audiomae.Params()
    assert (p.filename, p.prefix) == (audiomae.HUB_FILENAME, audiomae.FULL_PREFIX)
    assert pipeline.clip.Params().checkpoint == clip.DEFAULT_CHECKPOINT
    assert pipeline.clap.Params().checkpoint == clap.DEFAULT_CHECKPOINT
    for stage, frozen_module in ((pipeline.cavp, cavp), (pipeline.timechat, timechat), (pipeline.audiomae, audiomae),
                                 (pipeline.clip, clip), (pipeline.clap, clap)):
        assert stage._encoder() is frozen_module and stage.encoder is frozen_module  # what run() hands the encoder


def test_moved_params_are_reexported_where_they_were():
    import infer.audioldm2
    import infer.generate
    import infer.params
    import infer.stage
    import scoring.audio
    import scoring.metrics
    import scoring.params
    import scoring.run
    import scoring.stage

    assert infer.generate.GenerateParams is infer.params.GenerateParams is infer.stage.Params
    assert infer.audioldm2.SCHEDULERS is infer.params.SCHEDULERS
    assert infer.audioldm2.DEFAULT_NEGATIVE_PROMPT == infer.params.GenerateParams().negative_prompt
    assert scoring.run.EvalParams is scoring.params.EvalParams is scoring.stage.Params
    assert scoring.audio.EVAL_SR == scoring.params.EVAL_SR == 16000
    assert scoring.metrics.IS_SPLITS == scoring.params.EvalParams().is_splits == 10
