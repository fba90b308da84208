"""Preflight of the ``evaluate`` stage: every evaluation network's checkpoint against the network built on the
meta device, read memory-mapped (no weights loaded), with the same key rules as its loader."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch.nn as nn

from frozen.weights import existing_file, meta_state, read_weights, shape_problems, shapes_of, unwrap
from scoring.params import EvalParams


def _nets() -> dict[str, tuple[Callable[[], nn.Module], tuple[str, ...], tuple[str, ...], bool]]:
    """params key -> (build the full network, prefixes stripped, key prefixes ignored, unexpected keys allowed)."""
    from frozen.imagebind import ImageBind, ImageBindConfig
    from frozen.panns import Cnn14
    from frozen.passt import PaSST
    from frozen.synchformer import Synchformer
    from frozen.vggish import VGGish

    return {
        "panns_ckpt": (Cnn14, ("module.",), (), False),
        "vggish_ckpt": (VGGish, ("module.",), ("pproc.",), False),
        "passt_ckpt": (lambda: PaSST().net, ("module.", "net."), (), False),
        "imagebind_ckpt": (lambda: ImageBind(ImageBindConfig()), ("module.",), (), True),  # other modalities
        "synchformer_ckpt": (Synchformer, ("module.",), (), True),
    }


def check_network(key: str, path: Path) -> list[str]:
    build, prefixes, ignore, unexpected_ok = _nets()[key]
    own = meta_state(build)
    sd = shapes_of(unwrap(read_weights(path, key), source=f"{key} {path.name}", strip=prefixes))
    sd = {k: v for k, v in sd.items() if not (ignore and k.startswith(ignore))}
    shape_ok = ()
    pos = "transformer.pos_emb_cfg.pos_emb"  # the Synchformer loader trims a longer positional table
    if key == "synchformer_ckpt" and pos in sd and pos in own and sd[pos][1] >= own[pos][1]:
        shape_ok = (pos,)
    return shape_problems(f"{key.removesuffix('_ckpt')} checkpoint {path.name}", own, sd,
                          unexpected_ok=unexpected_ok, shape_ok=shape_ok)


def preflight_eval(p: EvalParams) -> list[tuple[str, str]]:
    if p.model != "full":
        return []
    out = []
    for key in _nets():
        path = existing_file(getattr(p, key))
        if path is not None:
            out += [(f"params.{key}", msg) for msg in check_network(key, path)]
    return out
