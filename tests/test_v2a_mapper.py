"""V2A-Mapper: regression and generative mappers, training on a synthetic CLIP/CLAP cache, AudioLDM generation
against a direct AudioLDMPipeline call, and the Generator for both new mapper families (tiny, offline)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from infer.audioldm import build_audioldm_pipeline, generate_from_clap, unconditional_embedding
from trainer.checkpoint import write_checkpoint
from trainer.config import TrainConfig
from trainer.mapper import build_mapper, load_mapper, objective
from trainer.synthetic import write_synthetic_cache
from trainer.train import run
from trainer.v2a_mapper import V2ADiffusionMapper, V2ARegressionMapper

DIMS = {"clip_steps": 40, "clip_dim": 12, "n_tokens": 1, "target_dim": 16}
SECONDS, STEPS = 0.32, 2


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def pipe():
    p = build_audioldm_pipeline({"model": "tiny", "seed": 0})
    p.set_progress_bar_config(disable=True)
    return p


def test_regression_mapper_is_an_mlp_on_the_mean_frame():
    m = build_mapper(TrainConfig(model="tiny", mapper="v2a_regression"), DIMS).eval()
    assert isinstance(m, V2ARegressionMapper) and m.spec.kind == "v2a_regression"
    x, tgt = torch.randn(3, 40, 12), torch.randn(3, 1, 16)
    out = m.generate(x)
    assert out.shape == (3, 1, 16)
    torch.testing.assert_close(out[:, 0], m.mlp(x.mean(1)))
    torch.testing.assert_close(m.generate(x[:, torch.randperm(40)]), out, rtol=1e-5, atol=1e-6)  # order-free
    pred, goal = objective(m, x, None, tgt)
    assert goal is tgt and pred.shape == (3, 1, 16)


def test_generative_mapper_sequence_and_seeded_sampling():
    m = build_mapper(TrainConfig(model="tiny", mapper="v2a_diffusion", sample_steps=4), DIMS).eval()
    assert isinstance(m, V2ADiffusionMapper) and m.n_tokens == 1 and m.proj  # width 32 != CLAP 16: projections
    x, xt, t = torch.randn(2, 40, 12), torch.randn(2, 1, 16), torch.tensor([3, 900])
    seq = torch.cat([m.t_embed(m.t_proj(t))[:, None], m.clip_in(x), m.noisy_in(xt), m.queries.expand(2, -1, -1)], 1)
    want = m.pred_out(m.backbone(inputs_embeds=seq).last_hidden_state[:, -1:])
    torch.testing.assert_close(m.denoise(x, None, xt, t), want)
    gens = lambda: [torch.Generator().manual_seed(s) for s in (7, 8)]  # noqa: E731
    a = m.generate(x, None, generator=gens())
    assert a.shape == (2, 1, 16)
    torch.testing.assert_close(m.generate(x, None, generator=gens()), a, rtol=0, atol=0)


@pytest.mark.parametrize("kind", ["v2a_regression", "v2a_diffusion"])
def test_v2a_mappers_learn_the_clap_target_and_round_trip(kind, tmp_path):
    cache = tmp_path / "features.zarr"
    write_synthetic_cache(cache, n=64, shard_size=16, n_val=12, task="half", v2a=True)
    cfg = TrainConfig(model="tiny", mapper=kind, epochs=8, global_batch=8, lr=3e-3, sample_steps=8)
    s = run(cfg, cache=str(cache), out_dir=str(tmp_path / "run"), progress=False)
    f = s["final"]
    assert f["ar_mse"] < 0.3 * f["base_mse"] and f["ar_cos"] > f["base_cos"], f
    m = load_mapper(tmp_path / "run" / "best")
    assert m.spec.kind == kind and m.spec.encoders == "clip"
    x = torch.randn(2, 40, 16)
    g = lambda: [torch.Generator().manual_seed(i) for i in (0, 1)]  # noqa: E731
    torch.testing.assert_close(load_mapper(tmp_path / "run" / "best").generate(x, None, generator=g()),
                               m.generate(x, None, generator=g()))


def test_generation_equals_a_direct_audioldm_pipeline_call(pipe):
    emb = torch.randn(2, 16, generator=torch.Generator().manual_seed(0))
    ours = generate_from_clap(pipe, emb[:, None], seed=[3, 4], steps=STEPS, guidance=2.5, audio_seconds=SECONDS)
    gens = [torch.Generator().manual_seed(3), torch.Generator().manual_seed(4)]
    direct = pipe(prompt_embeds=F.normalize(emb, dim=-1), num_inference_steps=STEPS, guidance_scale=2.5,
                  audio_length_in_s=SECONDS, generator=gens).audios  # the pipeline encodes '' itself
    assert ours.shape == (2, int(SECONDS * 16000)) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, direct, rtol=1e-5, atol=1e-6 * np.abs(direct).max())
    gens = [torch.Generator().manual_seed(3), torch.Generator().manual_seed(4)]
    neg = unconditional_embedding(pipe).expand(2, -1)
    exact = pipe(prompt_embeds=F.normalize(emb, dim=-1), negative_prompt_embeds=neg, num_inference_steps=STEPS,
                 guidance_scale=2.5, audio_length_in_s=SECONDS, generator=gens).audios
    np.testing.assert_array_equal(ours, exact)
    # the embedding is normalised (AudioLDM's condition is a unit CLAP vector): its scale does not matter
    np.testing.assert_allclose(generate_from_clap(pipe, 3 * emb, seed=[3, 4], steps=STEPS, guidance=2.5,
                                                  audio_seconds=SECONDS),
                               ours, rtol=1e-5, atol=1e-6 * np.abs(ours).max())
    emb2 = torch.randn(2, 16, generator=torch.Generator().manual_seed(9))
    other = generate_from_clap(pipe, emb2, seed=[3, 4], steps=STEPS, guidance=2.5, audio_seconds=SECONDS)
    assert np.abs(other - ours).max() > 1e-2 * np.abs(ours).max()  # the embedding drives the sound
    with pytest.raises(ValueError, match="expects"):
        generate_from_clap(pipe, torch.randn(2, 8), seed=0, steps=STEPS, audio_seconds=SECONDS)


def test_tiny_audioldm_round_trips_through_from_pretrained(pipe, tmp_path):
    pipe.save_pretrained(str(tmp_path / "audioldm"))
    loaded = build_audioldm_pipeline({"model": "full", "checkpoint": str(tmp_path / "audioldm")})
    loaded.set_progress_bar_config(disable=True)
    emb = torch.randn(1, 16)
    np.testing.assert_allclose(generate_from_clap(loaded, emb, seed=1, steps=STEPS, audio_seconds=SECONDS),
                               generate_from_clap(pipe, emb, seed=1, steps=STEPS, audio_seconds=SECONDS),
                               rtol=1e-5, atol=1e-9)
    with pytest.raises(RuntimeError, match="not an AudioLDM pipeline"):
        build_audioldm_pipeline({"model": "full", "checkpoint": str(tmp_path / "nowhere")})


def _checkpoint(mapper, cfg, folder):
    write_checkpoint(folder, weights=mapper.state_dict(), manifest={"step": 1}, config=cfg.to_dict(),
                     mapper=mapper.spec.to_dict())
    return folder


@pytest.mark.parametrize("kind", ["diffusion", "v2a_diffusion"])
def test_generator_runs_both_new_families_deterministically(kind, tmp_path):
    from infer.core import Clip
    from infer.generate import GenerateParams, Generator

    if kind == "diffusion":  # Diff-Mapper + AudioLDM-2 (tiny: 32-d generated stream)
        dims = {"cavp_steps": 40, "cavp_dim": 8, "timechat_windows": 2, "timechat_queries": 4, "timechat_dim": 8,
                "n_tokens": 8, "target_dim": 32}
        feats = lambda i: {"cavp": np.random.default_rng(i).standard_normal((1, 40, 8)),  # noqa: E731
                           "timechat": np.random.default_rng(i).standard_normal((1, 2, 4, 8))}
    else:  # V2A-Mapper + AudioLDM (tiny: 16-d CLAP)
        dims = DIMS
        feats = lambda i: {"clip": np.random.default_rng(i).standard_normal((1, 40, 12))}  # noqa: E731
    cfg = TrainConfig(model="tiny", mapper=kind, sample_steps=3)
    folder = _checkpoint(build_mapper(cfg, dims), cfg, tmp_path / "best")
    p = GenerateParams(model="tiny", checkpoint=None, half=False, steps=STEPS, audio_seconds=SECONDS)
    gen = Generator(p, folder, batch_size=2)
    jobs = [Clip(id=f"c{i}", features=feats(i), prompt="dog barking") for i in range(3)]
    recs = gen.run(jobs, tmp_path / "a", progress=False)
    assert [r["id"] for r in recs] == ["c0", "c1", "c2"]
    first = {j.id: (tmp_path / "a" / f"{j.id}.wav").read_bytes() for j in jobs}
    Generator(p, folder, batch_size=1).run(jobs, tmp_path / "b", progress=False)  # other batches, same seeds
    again = {j.id: (tmp_path / "b" / f"{j.id}.wav").read_bytes() for j in jobs}
    assert first == again
    with pytest.raises(RuntimeError, match="do not match"):
        gen.check_features({"cavp": (40, 3), "clip": (40, 3)}, "x")


def test_a_cache_without_clip_and_clap_is_refused_with_the_stage_to_run(tmp_path):
    from trainer.data import CacheError

    write_synthetic_cache(tmp_path / "features.zarr", n=16, shard_size=8, n_val=4)
    with pytest.raises(CacheError, match="clip/emb is missing: run the clip stage"):
        run(TrainConfig(model="tiny", mapper="v2a_regression", epochs=1, global_batch=4),
            cache=str(tmp_path / "features.zarr"), out_dir=str(tmp_path / "run"), progress=False)
