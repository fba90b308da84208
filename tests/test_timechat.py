"""TimeChat visual path: key layout, checkpoint loading, parity with transformers' InstructBLIP modules,
EVA attention by hand, windows, timestamp texts, padding masks, determinism."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pytest
import torch

from frozen.blocks import Attention
from frozen.eva_vit import EvaViT, EvaViTConfig
from frozen.grid import ClipGrid
from frozen.qformer import QFormer
from frozen.timechat import (
    TimeChatConfig,
    TimeChatVisual,
    build,
    init_tiny_weights_,
    make_tiny_tokenizer,
    timestamp_texts,
    window_starts,
)



def tiny_model(seed: int = 0, **run) -> TimeChatVisual:
    return init_tiny_weights_(TimeChatVisual(TimeChatConfig.tiny(**run)), seed).eval()


def clips(b: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, 40, 224, 224, 3), dtype=torch.uint8, generator=g)  # (B, 40, 224, 224, 3)


def normalise(x: torch.Tensor) -> torch.Tensor:
    """(B, T, H, W, 3) uint8 -> (B, T, 3, H, W), written independently of the encoder's preprocess."""
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 1, 3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 1, 3, 1, 1)
    return (x.permute(0, 1, 4, 2, 3).float() / 255.0 - mean) / std


def text_inputs(n: int, fps: int = 4):
    grid = ClipGrid(fps=fps, seconds=n / fps)  # n frames
    tok = make_tiny_tokenizer()(timestamp_texts(grid), padding="longest", max_length=32, truncation=True,
                                return_tensors="pt")
    return tok["input_ids"], tok["attention_mask"]


# (1) the full model reproduces the reference key list, shape for shape
def test_full_state_dict_matches_reference_keys(meta_keys, reference_keys):
    mine = meta_keys(lambda: TimeChatVisual(TimeChatConfig.full()))
    ref = reference_keys("timechat_visual_keys")  # derived from the reference code (docs/models.md)
    assert len(ref) == 902 and len(mine) == 902
    assert dict(mine) == dict(ref)
    for prefix in ("visual_encoder.", "Qformer.", "video_Qformer."):  # same order inside every submodule
        assert [k for k, _ in mine if k.startswith(prefix)] == [k for k, _ in ref if k.startswith(prefix)]
    cfg = TimeChatConfig.full()
    assert cfg.vit.num_tokens == 257 and cfg.n_windows(40) == 10 and cfg.out_dim == 4096


# (2) tiny checkpoints in the three released formats load through build() and reproduce the source model
def write_released_files(src: TimeChatVisual, tmp: Path, *, drop_from_blip: str | None = None) -> dict:
    sd = {k: v.clone() for k, v in src.state_dict().items()}
    depth = src.cfg.vit.depth
    eva = {k[len("visual_encoder."):]: v for k, v in sd.items() if k.startswith("visual_encoder.")}
    eva.update({f"blocks.{depth}.{k[len('blocks.0.'):]}": v.clone() for k, v in eva.items() if k.startswith("blocks.0.")})
    torch.save(eva, tmp / "eva_vit_g.pth")  # flat, no prefix, one unused extra block (like blocks.39)
    blip = {k: (v + 1.0 if k.startswith("Qformer.") else v) for k, v in sd.items()  # stale Q-Former, overridden later
            if k.startswith(("ln_vision.", "Qformer.", "query_tokens")) and k != drop_from_blip}  # fmt: skip
    blip["llm_proj.weight"] = torch.zeros(4, 4)
    torch.save({"model": blip}, tmp / "instruct_blip_vicuna7b_trimmed.pth")
    tc = {k: v for k, v in sd.items() if k.startswith(("Qformer.", "query_tokens", "video_", "llama_proj"))}
    torch.save({"model": tc, "optimizer": None, "epoch": 3}, tmp / "timechat_7b.pth")
    return {"eva_vit": str(tmp / "eva_vit_g.pth"), "instructblip": str(tmp / "instruct_blip_vicuna7b_trimmed.pth"),
            "timechat": str(tmp / "timechat_7b.pth")}  # fmt: skip


def test_tiny_checkpoints_roundtrip_through_build(tmp_path, caplog):
    src = tiny_model(seed=3)
    files = write_released_files(src, tmp_path)
    with caplog.at_level(logging.INFO, logger="frozen.weights"):
        enc = build({"model": "tiny", "llama_proj": True, "frame_batch": 16, **files})
    assert "blocks.2" in caplog.text and "llm_proj" in caplog.text  # unexpected keys are reported
    assert enc.info.checkpoint["timechat"]["size"] == (tmp_path / "timechat_7b.pth").stat().st_size
    x = clips(2)
    got = enc.encode(x, torch.tensor([40, 25]))
    ids, mask = text_inputs(40)
    with torch.no_grad():
        want = src(normalise(x), ids, mask)  # (2, 10, 32, 48)
    assert got.dtype == torch.float32 and got.shape == (2, 10, 32, 48) == (2, *enc.info.output_shape)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_missing_keys_raise_and_llama_proj_is_optional(tmp_path):
    src = tiny_model(seed=4)
    files = write_released_files(src, tmp_path, drop_from_blip="ln_vision.weight")
    with pytest.raises(RuntimeError, match="ln_vision.weight"):
        build({"model": "tiny", **files})
    files = write_released_files(src, tmp_path)
    tc = torch.load(files["timechat"], weights_only=True)
    tc["model"] = {k: v for k, v in tc["model"].items() if not k.startswith("llama_proj")}
    torch.save(tc, files["timechat"])
    assert build({"model": "tiny", "llama_proj": False, **files}).info.output_shape == (10, 32, 32)
    with pytest.raises(RuntimeError, match="llama_proj"):
        build({"model": "tiny", "llama_proj": True, **files})


# (3) Q-Formers against transformers' InstructBlipQFormerModel on identical weights
def hf_qformer(ours: QFormer):
    from transformers import InstructBlipQFormerConfig, InstructBlipQFormerModel

    c = ours.bert.cfg
    cfg = InstructBlipQFormerConfig(
        vocab_size=max(c.vocab_size, 8), hidden_size=c.hidden, num_hidden_layers=c.layers, num_attention_heads=c.heads,
        intermediate_size=c.intermediate, hidden_act="gelu", max_position_embeddings=c.max_positions,
        layer_norm_eps=c.ln_eps, cross_attention_frequency=c.cross_attention_freq, encoder_hidden_size=c.encoder_width,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, pad_token_id=0,
    )  # fmt: skip
    cfg._attn_implementation = "eager"
    hf = InstructBlipQFormerModel(cfg).eval()
    mapped = {}
    for k, v in ours.bert.state_dict().items():
        if k.endswith("position_ids"):
            continue
        k = k.replace("embeddings.LayerNorm.", "embeddings.layernorm.")
        k = k.replace("attention.self.", "attention.attention.")  # also crossattention.self.
        mapped[k] = v
    res = hf.load_state_dict(mapped, strict=False)
    assert not res.unexpected_keys
    return hf, res.missing_keys


def test_frame_qformer_matches_transformers_instructblip():
    model = tiny_model(seed=5)
    hf, missing = hf_qformer(model.Qformer)
    assert [k for k in missing if "position_ids" not in k] == []  # every HF weight came from ours
    g = torch.Generator().manual_seed(0)
    image = torch.randn(3, 257, 32, generator=g)  # (N, 257, vit width)
    ids, mask = text_inputs(40, fps=1)  # frames >= 10 s tokenise longer: real padding
    ids, mask = ids[[0, 15, 39]], mask[[0, 15, 39]]
    assert mask[0].sum() < mask.shape[1]
    queries = model.query_tokens.expand(3, -1, -1)
    with torch.no_grad():
        ours = model.Qformer(queries, image, ids, mask)  # (3, 32 + L, 32): text rows kept
        qmask = torch.cat([torch.ones(3, 32, dtype=torch.long), mask], dim=1)
        ref = hf(input_ids=ids, attention_mask=qmask, query_embeds=queries, encoder_hidden_states=image,
                 encoder_attention_mask=torch.ones(3, 257, dtype=torch.long)).last_hidden_state  # fmt: skip
    assert ours.shape == (3, 32 + ids.shape[1], 32)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


def test_video_qformer_matches_transformers_without_text():
    model = tiny_model(seed=6)
    hf, missing = hf_qformer(model.video_Qformer)
    # ours has no text path: HF's word/position embeddings and text FFNs are the only weights we do not have
    assert all(("embeddings." in k and "layernorm" not in k) or ".intermediate." in k or ".output." in k for k in missing)
    memory = torch.randn(2, 4 * 45, 32)
    queries = model.video_query_tokens.expand(2, -1, -1)
    with torch.no_grad():
        ours = model.video_Qformer(queries, memory)
        ref = hf(input_ids=None, query_embeds=queries, encoder_hidden_states=memory,
                 encoder_attention_mask=torch.ones(2, memory.shape[1], dtype=torch.long)).last_hidden_state  # fmt: skip
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


def test_text_padding_is_masked():
    """Token ids at padded positions must change neither the queries nor the real text rows."""
    model = tiny_model(seed=7)
    ids, mask = text_inputs(40, fps=1)
    ids, mask = ids[:2], mask[:2]  # both padded by one token
    image = torch.randn(2, 257, 32)
    q = model.query_tokens.expand(2, -1, -1)
    other = ids.masked_fill(mask == 0, 7)
    with torch.no_grad():
        a, b = model.Qformer(q, image, ids, mask), model.Qformer(q, image, other, mask)
        c = model.Qformer(q, image, other, torch.ones_like(mask))
    keep = torch.cat([torch.ones(2, 32, dtype=torch.bool), mask.bool()], dim=1)  # (2, 32 + L)
    torch.testing.assert_close(a[keep], b[keep], rtol=0, atol=1e-6)
    assert not torch.allclose(a[:, :32], c[:, :32], atol=1e-4)


# (4) EVA attention and ViT
def test_eva_attention_matches_manual_computation():
    cfg = EvaViTConfig.tiny()
    attn = Attention(cfg.width, cfg.heads, qkv_bias=False, qv_bias=True)
    with torch.no_grad():
        for p in attn.parameters():
            p.copy_(torch.randn(p.shape) * 0.3)
    assert not hasattr(attn, "k_bias") and attn.qkv.bias is None
    x = torch.randn(2, 9, cfg.width)
    w = attn.qkv.weight  # (3C, C)
    c, h = cfg.width, cfg.heads
    q = x @ w[:c].T + attn.q_bias
    k = x @ w[c : 2 * c].T  # the key has no bias
    v = x @ w[2 * c :].T + attn.v_bias
    split = lambda t: t.view(2, 9, h, c // h).transpose(1, 2)  # noqa: E731  (2, h, 9, d)
    scores = split(q) @ split(k).transpose(-1, -2) / math.sqrt(c // h)
    out = (scores.softmax(-1) @ split(v)).transpose(1, 2).reshape(2, 9, c)
    want = out @ attn.proj.weight.T + attn.proj.bias
    with torch.no_grad():
        torch.testing.assert_close(attn(x), want, rtol=1e-5, atol=1e-5)


def test_eva_vit_matches_transformers_instructblip_vision():
    from transformers import InstructBlipVisionConfig, InstructBlipVisionModel

    cfg = EvaViTConfig(img_size=56, patch=14, width=32, depth=2, heads=4, mlp_dim=64)
    vit = init_tiny_weights_(TimeChatVisual(TimeChatConfig.tiny()), 8).visual_encoder  # reuse the seeded init
    ours = EvaViT(cfg).eval()
    ours.load_state_dict({k: (v[:, : cfg.num_tokens] if k == "pos_embed" else v) for k, v in vit.state_dict().items()})
    hcfg = InstructBlipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                    image_size=56, patch_size=14, hidden_act="gelu", layer_norm_eps=1e-6, qkv_bias=True)  # fmt: skip
    hcfg._attn_implementation = "eager"
    hf = InstructBlipVisionModel(hcfg).eval()
    sd = {"embeddings.class_embedding": ours.cls_token, "embeddings.position_embedding": ours.pos_embed,
          "embeddings.patch_embedding.weight": ours.patch_embed.proj.weight, "embeddings.patch_embedding.bias": ours.patch_embed.proj.bias}  # fmt: skip
    for i, blk in enumerate(ours.blocks):
        a = blk.attn
        sd.update({f"encoder.layers.{i}.{k}": v for k, v in {
            "self_attn.qkv.weight": a.qkv.weight, "self_attn.qkv.bias": torch.cat([a.q_bias, torch.zeros_like(a.q_bias), a.v_bias]),
            "self_attn.projection.weight": a.proj.weight, "self_attn.projection.bias": a.proj.bias,
            "layer_norm1.weight": blk.norm1.weight, "layer_norm1.bias": blk.norm1.bias, "layer_norm2.weight": blk.norm2.weight,
            "layer_norm2.bias": blk.norm2.bias, "mlp.fc1.weight": blk.mlp.fc1.weight, "mlp.fc1.bias": blk.mlp.fc1.bias,
            "mlp.fc2.weight": blk.mlp.fc2.weight, "mlp.fc2.bias": blk.mlp.fc2.bias}.items()})  # fmt: skip
    res = hf.load_state_dict(sd, strict=False)
    assert set(res.missing_keys) <= {"post_layernorm.weight", "post_layernorm.bias"}
    x = torch.randn(2, 3, 56, 56)
    with torch.no_grad():
        ref = hf.encoder(hf.embeddings(x)).last_hidden_state  # before HF's post_layernorm (our ln_vision)
        torch.testing.assert_close(ours(x), ref, rtol=1e-5, atol=1e-5)


# (5) windows, timestamps, shapes, determinism
@pytest.mark.parametrize(
    "window,stride,expected",
    [(4, 4, 10), (32, 32, 2), (8, 4, 10), (5, 3, 14), (40, 40, 1), (1, 1, 40), (8, 8, 5)],
)
def test_window_count_and_partial_last_window(window, stride, expected):
    starts = window_starts(40, window, stride)
    assert len(starts) == expected == TimeChatConfig.tiny(window=window, stride=stride).n_windows(40)
    assert starts[0] == (0, min(window, 40)) and starts[-1][1] == min(starts[-1][0] + window, 40)
    assert window_starts(40, 32, 32) == [(0, 32), (32, 40)]  # the reference keeps the short last window


def test_windows_are_independent_video_qformer_calls():
    model = tiny_model(seed=9, window=8, stride=4)
    tokens = torch.randn(2, 40, 45, 32)  # (B, T, Q + L, H)
    with torch.no_grad():
        out = model.encode_video(tokens)  # (2, 10, 32, 48)
        x = tokens + model.video_frame_position_embedding.weight[:40][None, :, None]
        q = model.video_query_tokens.expand(2, -1, -1)
        last = model.llama_proj(model.video_Qformer(q, x[:, 36:40].flatten(1, 2)))  # partial window: 4 frames
        second = model.llama_proj(model.video_Qformer(q, x[:, 4:12].flatten(1, 2)))
    assert out.shape == (2, 10, 32, 48)
    torch.testing.assert_close(out[:, 9], last, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out[:, 1], second, rtol=1e-5, atol=1e-5)


def test_timestamp_texts_follow_timechat():
    texts = timestamp_texts(ClipGrid(fps=4, seconds=10.0))
    assert len(texts) == 40
    assert texts[0] == "This frame is sampled at 0.0 second."
    assert texts[1] == "This frame is sampled at 0.2 second."  # str(round(0.25, 1))
    assert texts[3] == "This frame is sampled at 0.8 second."
    assert texts[39] == "This frame is sampled at 9.8 second."
    ids, mask = text_inputs(40)
    tok = make_tiny_tokenizer()
    assert len(tok) == TimeChatConfig.tiny().qformer.vocab_size and tok.bos_token == "[DEC]"
    assert tok.convert_ids_to_tokens(ids[1].tolist()) == ["[CLS]", "this", "frame", "is", "sampled", "at", "0", ".", "2", "second", ".", "[SEP]"]
    assert bool(mask.all())  # 40 frames at 4 FPS: every text has the same length, no padding


@pytest.mark.parametrize("window,stride,llama", [(4, 4, False), (32, 32, True)])
def test_build_tiny_shapes_and_determinism(window, stride, llama):
    params = {"model": "tiny", "seed": 2, "window": window, "stride": stride, "llama_proj": llama, "frame_batch": 32}
    enc = build(params)
    x = clips(1, seed=5)
    a = enc.encode(x, torch.tensor([40]))
    b = build(params).encode(x, torch.tensor([40]))
    assert a.shape == (1, *enc.info.output_shape) == (1, math.ceil(40 / stride), 32, 48 if llama else 32)
    assert torch.equal(a, b) and torch.isfinite(a).all()
    c = build({**params, "seed": 3}).encode(x, torch.tensor([40]))
    assert not torch.allclose(a, c)
    assert enc.info.name == "timechat" and enc.info.input_kind == "frames" and enc.info.checkpoint == {"tiny_seed": 2}


def test_invalid_inputs_and_params():
    enc = build({"model": "tiny"})
    with pytest.raises(ValueError, match="uint8"):
        enc.encode(torch.zeros(1, 40, 224, 224, 3), torch.tensor([40]))
    with pytest.raises(ValueError, match="lengths"):
        enc.encode(clips(1), torch.tensor([41]))
    with pytest.raises(ValueError, match="half"):
        build({"model": "tiny", "half": True}, device="cpu")
    with pytest.raises(ValueError, match="window"):
        build({"model": "tiny", "window": 0})
    with pytest.raises(FileNotFoundError, match="eva_vit"):
        build({"model": "full", "eva_vit": "./nope.pth", "instructblip": "./x.pth", "timechat": "./y.pth"})


def test_half_vit_stays_close_and_returns_float32():
    """The `half` option: fp16 ViT matmul weights under autocast (the reference's precision); rest float32."""
    model = tiny_model(seed=10)
    x = normalise(clips(1, seed=2)[:, :4])  # (1, 4, 3, 224, 224)
    ids, mask = text_inputs(4)
    with torch.no_grad():
        full = model(x, ids, mask)
        half = model.use_fp16_vit()(x, ids, mask)
    assert model.visual_encoder.blocks[0].attn.qkv.weight.dtype == torch.float16
    assert model.visual_encoder.blocks[0].norm1.weight.dtype == torch.float32  # LayerNorms stay fp32
    assert half.dtype == torch.float32 and model.ln_vision.weight.dtype == torch.float32
    torch.testing.assert_close(half, full, rtol=0, atol=2e-2)


def test_hub_reference_failure_names_both_readings(tmp_path):
    pytest.importorskip("huggingface_hub")
    files = write_released_files(tiny_model(seed=11), tmp_path)
    with pytest.raises(FileNotFoundError, match="not a local file"):  # HF_HUB_OFFLINE=1 (conftest): no network
        build({"model": "tiny", **files, "eva_vit": "nobody/no-such-repo/eva_vit_g.pth"})


def test_the_clip_grid_sets_frames_timestamps_and_windows():
    """8 FPS over 10 s: 80 frames, TimeChat's instruction times at 1/8 s (round(i / 8, 1)), 20 windows of 4."""
    grid = ClipGrid(fps=8, seconds=10.0)
    enc = build({"model": "tiny", "seed": 1}, grid=grid)
    assert enc.info.output_shape == (20, 32, 32) and enc.info.config["fps"] == 8
    ids, mask = enc.timestamps()
    words = [" ".join(make_tiny_tokenizer().convert_ids_to_tokens(row[m.bool()].tolist())) for row, m in zip(ids, mask)]
    want = [f"This frame is sampled at {round(i / 8, 1)} second." for i in range(80)]  # TimeChat's own expression
    tok = make_tiny_tokenizer()
    assert len(words) == 80 and words == [" ".join(["[CLS]", *tok.tokenize(w), "[SEP]"]) for w in want]
    assert words[1].endswith("0 . 1 second . [SEP]")  # 0.125 s -> '0.1'
    g = torch.Generator().manual_seed(4)
    x = torch.randint(0, 256, (1, 80, 224, 224, 3), dtype=torch.uint8, generator=g)  # (1, 80, 224, 224, 3)
    out = enc.encode(x, torch.tensor([80]))
    assert out.shape == (1, 20, 32, 32) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="uint8"):  # the 4-FPS clip does not fit the 8-FPS grid
        enc.encode(clips(1), torch.tensor([40]))
    with pytest.raises(ValueError, match="96"):  # more frames than frame position embeddings
        build({"model": "tiny"}, grid=ClipGrid(fps=10, seconds=10.0))
