"""The GPT-2 that AudioLDM-2 ships (``cvssp/audioldm2``'s ``language_model/``) and the mapper starts from: its
config, the checked loader of a local diffusers folder (or a hub id), the random-weight builders at the released
size (``random-full``) and the tiny size, and the preflight of a folder (keys and shapes, no weights loaded).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from transformers import GPT2Config, GPT2Model

log = logging.getLogger(__name__)

GPT2_KEYS = ("n_embd", "n_layer", "n_head", "n_positions", "n_inner", "activation_function", "resid_pdrop",
             "embd_pdrop", "attn_pdrop", "layer_norm_epsilon", "initializer_range", "vocab_size",
             "scale_attn_weights", "scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn")


TINY_GPT2 = {"n_layer": 2, "n_head": 2, "n_positions": 128}  # the tiny mapper's GPT-2 (its width: the target's)
AUDIOLDM2_GPT2 = {"n_embd": 768, "n_layer": 12, "n_head": 12, "n_positions": 1024}  # the released language_model


def make_gpt2_config(d: dict) -> GPT2Config:
    return GPT2Config(**{**d, "bos_token_id": None, "eos_token_id": None})  # no vocabulary is used


def set_dropout(cfg: GPT2Config, p: float | None) -> None:
    if p is not None:
        cfg.resid_pdrop = cfg.embd_pdrop = cfg.attn_pdrop = float(p)


def gpt2_folder(root: str, subfolder: str) -> Path | None:
    """The local folder holding config.json (``<root>/<subfolder>`` or ``<root>``), or None for a hub id."""
    p = Path(root).expanduser()
    for cand in (p / subfolder, p):
        if (cand / "config.json").is_file():
            return cand
    if p.exists() or root.startswith((".", "/", "~")):
        raise FileNotFoundError(f"gpt2={root!r}: no config.json in {p / subfolder} or {p}; expected the diffusers "
                                "layout <root>/language_model/{config.json, model.safetensors | pytorch_model.bin}")
    return None


def read_state_dict(folder: Path) -> dict[str, torch.Tensor]:
    st, pt = folder / "model.safetensors", folder / "pytorch_model.bin"
    if st.is_file():
        from safetensors.torch import load_file
        return load_file(str(st))
    if pt.is_file():
        return torch.load(pt, map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"{folder}: neither model.safetensors nor pytorch_model.bin")


def load_gpt2_pretrained(root: str, subfolder: str = "language_model", dropout: float | None = None) -> GPT2Model:
    """AudioLDM-2's GPT-2 from a local diffusers folder (every key and shape checked) or from the hub."""
    folder = gpt2_folder(root, subfolder)
    if folder is None:  # a hub id: only reached outside the tests
        model = GPT2Model.from_pretrained(root, subfolder=subfolder)
        set_dropout(model.config, dropout)
        return model
    cfg = GPT2Config.from_json_file(str(folder / "config.json"))
    set_dropout(cfg, dropout)
    model = GPT2Model(make_gpt2_config({k: getattr(cfg, k) for k in GPT2_KEYS if hasattr(cfg, k)}))
    sd = read_state_dict(folder)
    sd = {k.removeprefix("transformer."): v for k, v in sd.items() if not k.startswith("lm_head.")}
    ignorable = (".attn.bias", ".attn.masked_bias")  # causal-mask buffers of older checkpoints
    unexpected = [k for k in sd if k not in model.state_dict()]
    sd = {k: v for k, v in sd.items() if k in model.state_dict()}
    missing = [k for k in model.state_dict() if k not in sd]
    for k, v in sd.items():
        if tuple(v.shape) != tuple(model.state_dict()[k].shape):
            raise RuntimeError(f"{folder}: weight {k} has shape {tuple(v.shape)}, the config wants "
                               f"{tuple(model.state_dict()[k].shape)}")
    if missing:
        raise RuntimeError(f"{folder}: {len(missing)} GPT-2 weights missing, e.g. {missing[:6]}")
    real_unexpected = [k for k in unexpected if not k.endswith(ignorable)]
    if real_unexpected:
        raise RuntimeError(f"{folder}: {len(real_unexpected)} unexpected weights, e.g. {real_unexpected[:6]}; "
                           "is this a GPT-2 checkpoint?")
    model.load_state_dict(sd, strict=True)
    log.info("loaded GPT-2 (%d layers, width %d) from %s", cfg.n_layer, cfg.n_embd, folder)
    return model


def random_full_gpt2(dropout: float | None = None) -> GPT2Model:
    """AudioLDM-2's GPT-2 shape with random weights (``pretrained: false``; benchmarks, smoke runs)."""
    cfg = make_gpt2_config(AUDIOLDM2_GPT2)
    set_dropout(cfg, dropout)
    return GPT2Model(cfg)


def preflight_gpt2(root: str | None, subfolder: str = "language_model") -> list[str]:
    """Problems ``load_gpt2_pretrained(root)`` would hit, without loading weights: no config.json, no weights
    file, keys or shapes that differ from the GPT-2 its config describes (built on meta; safetensors header)."""
    from frozen.weights import checkpoint_shapes, meta_state, shape_problems

    if not root or not Path(str(root)).expanduser().exists():
        return []  # a hub id or a missing path: the generic check reports it
    try:
        folder = gpt2_folder(str(root), subfolder)
    except FileNotFoundError as err:
        return [str(err)]
    weights = [f for f in (folder / "model.safetensors", folder / "pytorch_model.bin") if f.is_file()]
    if not weights:
        return [f"gpt2 {folder}: neither model.safetensors nor pytorch_model.bin"]
    cfg = GPT2Config.from_json_file(str(folder / "config.json"))
    own = meta_state(lambda: GPT2Model(make_gpt2_config({k: getattr(cfg, k) for k in GPT2_KEYS if hasattr(cfg, k)})))
    ck = {k.removeprefix("transformer."): v for k, v in checkpoint_shapes(weights[0]).items()
          if not k.startswith("lm_head.") and not k.endswith((".attn.bias", ".attn.masked_bias"))}
    return shape_problems(f"gpt2 {weights[0]}", own, ck, unexpected_ok=False)
