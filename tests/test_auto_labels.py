"""``--prompt auto`` (infer/labels.py): the VGGSound class list shipped with the package, CLIP zero-shot on a tiny
CLIP whose weights are set so that a known frame maps to a known class, scores against an independent computation;
``pipe()``'s prompt rules and the length rule on tiny models."""

from __future__ import annotations

import dataclasses
import fnmatch
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch

from e2e_project import REPO, tiny_pipeline
from frozen.clip import build_zero_shot, preprocess, tiny_tokenizer
from infer.labels import PROMPT_TEMPLATE, AutoLabeler, label_frame_indices, vggsound_classes

KNOWN = "dog bow-wow"


def test_the_class_list_has_309_unique_names_and_names_its_source():
    classes = vggsound_classes()
    assert len(classes) == 309 == len(set(classes))
    assert list(classes) == sorted(classes) and KNOWN in classes and "playing timpani" in classes
    text = (REPO / "infer" / "data" / "vggsound_classes.txt").read_text()
    assert "github.com/hche11/VGGSound" in text.split("\n", 5)[2]  # the header names where it comes from
    package_data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert any(fnmatch.fnmatch("data/vggsound_classes.txt", g) for g in package_data["infer"])  # shipped with it


def _frame(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (1, 224, 224, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def labeler():
    """A tiny CLIP whose image projection is moved (a rank-one update) so that ``_frame(0)``'s image embedding is
    exactly the text embedding of the prompt of ``KNOWN``."""
    clip = build_zero_shot("tiny")
    model = clip.model
    classes = vggsound_classes()
    target = clip.text_embeddings([PROMPT_TEMPLATE.format(KNOWN)])[0]  # (D,), normalised
    with torch.no_grad():
        px = preprocess(torch.from_numpy(_frame(0)), 224)
        h = model.vision_model(pixel_values=px).pooler_output[0]  # (H,): what the projection reads
        w = model.visual_projection.weight  # (D, H)
        w += torch.outer(target * (w @ h).norm() - w @ h, h) / (h @ h)  # now w @ h is parallel to target
    return AutoLabeler(clip, classes)


def test_a_known_frame_gets_its_known_class(labeler):
    top = labeler.top(_frame(0))
    assert [name for name, _ in top][0] == KNOWN and len(top) == 3
    assert top[0][1] > top[1][1] >= top[2][1] > 0


def test_scores_equal_an_independent_computation(labeler):
    """CLIPModel's own forward (logits_per_image = exp(logit_scale) * cosine) over the same prompts and frame."""
    model, classes = labeler.clip.model, labeler.classes
    frames = _frame(3)
    tok = tiny_tokenizer()
    enc = tok([PROMPT_TEMPLATE.format(c) for c in classes], padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(input_ids=enc.input_ids, attention_mask=enc.attention_mask,
                    pixel_values=preprocess(torch.from_numpy(frames), 224))
    want = torch.softmax(out.logits_per_image[0].double(), dim=0).numpy()
    got = labeler.scores(frames)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-9)
    assert abs(got.sum() - 1) < 1e-9
    top = labeler.top(frames)
    assert [n for n, _ in top] == [classes[i] for i in np.argsort(-want, kind="stable")[:3]]


def test_several_frames_are_averaged_after_normalising(labeler):
    frames = np.concatenate([_frame(1), _frame(2)])
    emb = labeler.clip.image_embeddings(torch.from_numpy(frames)).double().numpy()  # (2, D), normalised
    v = emb.mean(0) / np.linalg.norm(emb.mean(0))
    logits = labeler.clip.logit_scale * (labeler.text_embeddings.double().numpy() @ v)
    want = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    np.testing.assert_allclose(labeler.scores(frames), want, rtol=1e-5, atol=1e-9)


def test_label_frames_are_spread_evenly():
    assert label_frame_indices(40).tolist() == [0, 6, 11, 17, 22, 28, 33, 39]
    assert label_frame_indices(3).tolist() == [0, 1, 2] and label_frame_indices(0).tolist() == []


# ------------------------------------------------------------------------------------------------------------------
# pipe(): prompt="auto" by default, a given prompt wins, "" means none; the sound is never longer than the video
# ------------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from pipeline.demo_data import make_demo_clips

    pipe = tiny_pipeline(steps=2)
    pipe.settings = dataclasses.replace(pipe.settings, label_model="tiny")
    specs = make_demo_clips(tmp_path_factory.mktemp("videos"), n=4, seed=5)
    return pipe, {s.duration: Path(s.path) for s in specs}


def test_pipe_labels_by_default_and_a_given_prompt_wins(tiny):
    pipe, videos = tiny
    video = videos[3.0]
    auto = pipe(video, seed=1)
    (labels,) = auto.labels
    assert len(labels) == 3 and all(name in vggsound_classes() for name, _ in labels)
    frames_top = labels[0][0]
    assert auto.clips[0].prompt == frames_top
    same = pipe(video, prompt=frames_top, seed=1)  # the label is used exactly as a given prompt would be
    np.testing.assert_array_equal(auto.audios[0], same.audios[0])
    assert same.labels == [None] and same.clips[0].prompt == frames_top
    none = pipe(video, prompt="", seed=1)
    assert none.clips[0].prompt is None and none.labels == [None]
    assert pipe(video, prompt=None, seed=1).clips[0].prompt is None


def test_pipe_without_a_label_model_says_what_to_set(tiny):
    pipe, videos = tiny
    old = pipe.settings
    pipe.settings = dataclasses.replace(old, label_model=None)
    try:
        with pytest.raises(ValueError, match="label_model: null"):
            pipe(videos[3.0])
    finally:
        pipe.settings = old


def test_the_sound_is_never_longer_than_the_video(tiny):
    from infer.media_out import video_span

    pipe, videos = tiny
    short, long = videos[3.0], videos[14.0]
    start, end = video_span(short)
    n_short = int(round((end - start) * 16000))
    assert pipe(short, prompt="", seed=0).audios[0].shape == (n_short,)  # default: the first window, cut
    assert pipe(short, prompt="", seed=0, duration=12.0).audios[0].shape == (n_short,)
    assert pipe(short, prompt="", seed=0, whole=True).audios[0].shape == (n_short,)
    assert pipe(long, prompt="", seed=0).audios[0].shape == (int(10.24 * 16000),)  # longer video: one window
