"""pipeline/framestore.py: the stored forms of a clip's frames (JPEG film strip, H.264 4:4:4, raw) round-trip."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from pipeline.frames import FramesParams
from pipeline.framestore import JPEG_MAX_SIDE, decode_frames, encode_frames


def _frames(n: int = 6, size: int = 32, seed: int = 0) -> np.ndarray:
    """Smooth moving gradients with a little noise: (n, size, size, 3) uint8."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    out = [np.stack([(x * 7 + 11 * i) % 256, (y * 5 + 3 * i) % 256, (x + y + 17 * i) % 256], -1)
           + rng.normal(0, 2, (size, size, 3)) for i in range(n)]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def test_jpeg_strip_is_the_per_frame_jpeg():
    """4:4:4 with 8-row-aligned frames: no block spans two frames, so the strip decodes to exactly what encoding
    each frame as its own JPEG gives (an independent PIL round trip per frame)."""
    frames = _frames()
    data, ext = encode_frames(frames, codec="jpeg", quality=90)
    assert ext == "jpg" and data[:2] == b"\xff\xd8"
    got = decode_frames(data, ext)
    for f, g in zip(frames, got):
        buf = io.BytesIO()
        Image.fromarray(f).save(buf, "JPEG", quality=90, subsampling=0)
        assert np.array_equal(np.asarray(Image.open(buf).convert("RGB")), g)
    assert got.shape == frames.shape and got.dtype == np.uint8
    with Image.open(io.BytesIO(data)) as im:  # a picture anyone can open: the frames top to bottom
        assert im.size == (32, 6 * 32) and im.mode == "RGB"


@pytest.mark.parametrize("quality, max_err", [(95, 2.0), (75, 6.0)])
def test_jpeg_error_falls_with_quality(quality, max_err):
    frames = _frames(n=4, size=64)
    got = decode_frames(*encode_frames(frames, codec="jpeg", quality=quality))
    assert np.abs(got.astype(int) - frames).mean() < max_err


def test_every_codec_is_deterministic_and_decodes_to_the_input_shape():
    frames = _frames(n=5, size=48)
    for codec in ("jpeg", "h264", "raw"):
        a, ext = encode_frames(frames, codec=codec)
        b, _ = encode_frames(frames.copy(), codec=codec)
        assert a == b, codec
        got = decode_frames(a, ext)
        assert got.shape == frames.shape
        if codec == "raw":
            assert np.array_equal(got, frames)
        else:
            assert np.abs(got.astype(int) - frames).mean() < 3.0, codec
    with pytest.raises(ValueError, match="'jpeg', 'h264' or 'raw'"):
        encode_frames(frames, codec="vp9")


def test_strip_too_tall_is_a_clear_error():
    n = JPEG_MAX_SIDE // 224 + 1
    with pytest.raises(ValueError, match="JPEG strip"):
        FramesParams.from_dict({"seconds": n / 4})
    FramesParams.from_dict({"seconds": n / 4, "codec": "h264"})  # the video form has no such limit
    with pytest.raises(ValueError, match="use codec h264 or raw"):
        encode_frames(np.zeros((JPEG_MAX_SIDE // 8 + 1, 8, 8, 3), np.uint8), codec="jpeg")


def test_a_jpeg_without_the_tag_is_refused():
    buf = io.BytesIO()
    Image.fromarray(_frames(n=1)[0]).save(buf, "JPEG")
    with pytest.raises(RuntimeError, match="re-run the frames stage"):
        decode_frames(buf.getvalue(), "jpg")
