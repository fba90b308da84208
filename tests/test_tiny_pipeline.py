"""``python -m lab.tiny_pipeline OUT``: the untrained tiny pipeline folder the install check generates with (built
from the packaged configuration alone)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from e2e_project import REPO
from infer import hub
from infer.core import feature_shapes
from infer.export import configured_encoders
from infer.pipeline import MFMMapperPipeline
from lab.tiny_pipeline import TINY_AUDIOLDM2, main, tiny_parts, write_tiny_pipeline
from v2a.config import load_config

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def test_the_folder_loads_with_its_seeded_mapper_and_the_demo_encoders(tmp_path):
    folder = write_tiny_pipeline(tmp_path / "tiny", steps=3, seed=5)
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    assert files == sorted([*hub.FILES.values(), hub.INDEX])
    pipe = MFMMapperPipeline.from_pretrained(folder, device="cpu")
    assert pipe.settings.steps == 3 and pipe.model_params == TINY_AUDIOLDM2 and pipe.generator == "audioldm2"
    # the encoders of the repository's demo configuration (the packaged files are links to them)
    demo = load_config([REPO / "stages.yaml", REPO / "configs" / "demo.yaml"])
    assert pipe.encoders_record == json.loads(json.dumps(configured_encoders(demo, ["cavp", "timechat"])))
    assert json.loads((folder / hub.FILES["training"]).read_text()) == {"checkpoint": "untrained", "seed": 5}
    # the weights are the seeded build's: the same seed gives them again, another seed does not
    got = pipe.mapper.state_dict()
    same, other = tiny_parts(seed=5)["mapper"].state_dict(), tiny_parts(seed=6)["mapper"].state_dict()
    assert got.keys() == same.keys() and all(torch.equal(got[k], same[k]) for k in got)
    assert not all(torch.equal(got[k], other[k]) for k in got)


def test_its_sizes_are_what_the_tiny_encoders_compute(tmp_path):
    pipe = MFMMapperPipeline.from_pretrained(write_tiny_pipeline(tmp_path / "tiny"), device="cpu")
    want = feature_shapes(pipe.mapper.spec)
    assert sorted(want) == ["cavp", "timechat"]
    frames = np.random.default_rng(0).integers(0, 256, size=(40, 224, 224, 3), dtype=np.uint8)
    feats = pipe.encode_frames(frames, 40)
    assert {n: f.shape for n, f in feats.items()} == want
    tokens = pipe.tokens([feats])  # (1, n_tokens, target_dim): what AudioLDM-2's GPT-2 slot takes
    assert tokens.shape == (1, pipe.mapper.spec.n_tokens, TINY_AUDIOLDM2["gpt_dim"])
    assert torch.isfinite(tokens).all()


def test_the_command_line(tmp_path, capsys):
    main([str(tmp_path / "t"), "--steps", "4"])
    assert "wrote a tiny untrained pipeline to" in capsys.readouterr().out
    gen = json.loads((tmp_path / "t" / hub.FILES["generation"]).read_text())
    assert gen["settings"]["steps"] == 4 and gen["audioldm2"] == TINY_AUDIOLDM2
    with pytest.raises(SystemExit) as e:
        main([str(tmp_path / "u"), "--steps", "0"])
    assert e.value.code == 2 and "--steps 0" in capsys.readouterr().err and not (tmp_path / "u").exists()
