"""``--prompt auto``: a zero-shot class label for a video without one, from its frames, with CLIP.

The paper conditions AudioLDM-2 on the video's class label as well (VGGSound labels such as ``dog bow-wow``); a
person with a silent clip has none. ``AutoLabeler`` scores the video against the 309 VGGSound class names
(``infer/data/vggsound_classes.txt``, shipped with the package; its header names the source) the way CLIP
classifies zero-shot:

1. frames: ``LABEL_FRAMES`` frames spread evenly over the decoded span (the frames the mapper reads, 224 x 224);
2. image embedding: CLIP's projected image embedding of each frame, L2-normalised, averaged, normalised again;
3. text embeddings: ``PROMPT_TEMPLATE`` filled with each class name, CLIP's projected text embedding, normalised
   (computed once per labeler);
4. scores: softmax over the classes of ``logit_scale * cosine`` (CLIP's own zero-shot probabilities);

the top class becomes the prompt and the top ``TOP_K`` with their scores are recorded. The CLIP checkpoint is the
generation setting ``label_model`` (infer/params.py): by default the weights-manifest entry of V2A-Mapper's CLIP
(``clip_vit_l14``: openai/clip-vit-large-patch14), ``tiny`` in the demo. A label the caller gives always wins.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from importlib import resources

import numpy as np
import torch

log = logging.getLogger(__name__)

CLASS_FILE = "data/vggsound_classes.txt"  # inside the infer package
PROMPT_TEMPLATE = "a photo of {}."  # CLIP's standard zero-shot prompt
LABEL_FRAMES = 8  # frames scored per video
TOP_K = 3  # labels recorded (the first is the prompt)
AUTO = "auto"  # the prompt value that asks for a label


@lru_cache(maxsize=1)
def vggsound_classes() -> tuple[str, ...]:
    """The 309 VGGSound class names, in the file's (sorted) order."""
    text = resources.files("infer").joinpath(CLASS_FILE).read_text(encoding="utf-8")
    return tuple(ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#"))


def label_frame_indices(n_frames: int, k: int = LABEL_FRAMES) -> np.ndarray:
    """Indices of ``k`` frames spread evenly over ``n_frames`` real frames (all of them when fewer)."""
    if n_frames <= 0:
        return np.zeros(0, dtype=np.int64)
    return np.unique(np.round(np.linspace(0, n_frames - 1, min(k, n_frames))).astype(np.int64))


def resolve_label_model(value: str, cfg=None) -> str:
    """A ``label_model`` setting -> what ``frozen.clip.build_zero_shot`` loads: ``tiny``, a folder or a hub id. A
    weights-manifest name (v2a/weights.yaml) is its local copy when fetched, else its hub repo id (loaded from the
    Hugging Face cache, or downloaded where the hub is reachable)."""
    from v2a.weights import WeightError, load_manifest, resolve, weights_dir

    manifest = load_manifest()
    if value not in manifest:
        return str(value)
    try:
        return str(resolve(value, weights_dir(cfg), manifest))
    except WeightError:
        entry = manifest[value]
        if entry.hub:
            return str(entry.hub["repo"])
        raise


class AutoLabeler:
    """CLIP zero-shot over the VGGSound classes: frames -> [(class, score)] best first (scores sum to 1 over all
    classes)."""

    def __init__(self, clip, classes: tuple[str, ...] | list[str] | None = None,
                 template: str = PROMPT_TEMPLATE):
        self.clip = clip  # frozen.clip.CLIPZeroShot
        self.classes = tuple(classes or vggsound_classes())
        self.template = template
        self._text: torch.Tensor | None = None

    @property
    def text_embeddings(self) -> torch.Tensor:
        """(C, D) normalised text embeddings of the class prompts, computed on first use."""
        if self._text is None:
            self._text = self.clip.text_embeddings([self.template.format(c) for c in self.classes])
        return self._text

    def scores(self, frames: np.ndarray) -> np.ndarray:
        """uint8 (N, H, W, 3) frames -> (C,) float64 class probabilities."""
        if frames.ndim != 4 or frames.shape[0] == 0:
            raise ValueError(f"auto label: need frames (N, H, W, 3) with N >= 1, got {frames.shape}")
        img = self.clip.image_embeddings(torch.from_numpy(np.ascontiguousarray(frames)))  # (N, D), normalised
        v = torch.nn.functional.normalize(img.mean(0, keepdim=True), dim=-1)  # (1, D)
        logits = self.clip.logit_scale * (v @ self.text_embeddings.T)[0]  # (C,)
        return torch.softmax(logits.double(), dim=0).numpy()

    def top(self, frames: np.ndarray, n_frames: int | None = None, k: int = TOP_K) -> list[tuple[str, float]]:
        """The ``k`` best classes for a video's frames (the first ``n_frames`` real ones, ``LABEL_FRAMES`` of them
        spread evenly), each with its score."""
        n = len(frames) if n_frames is None else int(n_frames)
        p = self.scores(frames[label_frame_indices(n)])
        best = np.argsort(-p, kind="stable")[:k]
        return [(self.classes[i], float(p[i])) for i in best]


def format_labels(labels: list[tuple[str, float]]) -> str:
    """``dog barking 0.62, dog bow-wow 0.21, ...`` for logs and the command line."""
    return ", ".join(f"{name} {score:.2f}" for name, score in labels)
