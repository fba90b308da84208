"""Long videos: the window plan and the equal-power crossfade at the seams (no discontinuity, constant power)."""

import numpy as np
import pytest

from infer.windows import crossfade_join, equal_power_gains, plan_windows

SR = 16000


def test_plan_covers_the_video_on_the_frame_grid():
    assert plan_windows(3.0) == [0.0] and plan_windows(10.0) == [0.0]
    assert plan_windows(14.0) == [0.0, 4.0]  # the last window ends at the video's end
    assert plan_windows(18.0) == [0.0, 8.0]  # exactly one hop
    assert plan_windows(26.3) == [0.0, 5.5, 11.0, 16.5]  # evenly spread
    for seconds in (10.1, 13.37, 19.99, 47.0, 600.0):
        starts = plan_windows(seconds, overlap=2.0)
        assert starts[0] == 0 and all(s * 4 == int(s * 4) for s in starts)  # multiples of 1/4 s
        assert all(b - a <= 8.0 for a, b in zip(starts, starts[1:]))  # overlap >= 2 s everywhere
        assert starts[-1] + 10.0 >= seconds > starts[-1] + 10.0 - 0.25  # reaches the end, by less than a frame
    with pytest.raises(ValueError, match="overlap=10"):
        plan_windows(30.0, overlap=10.0)


def test_gains_have_equal_power():
    out, inn = equal_power_gains(1000)
    np.testing.assert_allclose(out ** 2 + inn ** 2, 1.0, atol=1e-12)
    assert out[0] > 0.999 and inn[-1] > 0.999 and np.all(np.diff(out) < 0) and np.all(np.diff(inn) > 0)


def _sine(freq, phase, n):
    return np.sin(2 * np.pi * freq * np.arange(n) / SR + phase)


def test_seam_has_no_discontinuity():
    """Two windows of a 440 Hz tone a quarter period apart: a hard cut jumps by ~1 at the seam; the crossfade's largest
    sample-to-sample step stays within the tones' own (2 pi f / sr) times sqrt(2) plus the fade's slope."""
    span, start, total = 10 * SR, 4 * SR, 14 * SR
    a, b = _sine(440, 0.0, span), _sine(440, np.pi / 2, span)  # a quarter period apart
    joined = crossfade_join([a, b], [0, start], span, total)
    own_step = np.abs(np.diff(a)).max()
    assert np.abs(np.diff(joined)).max() <= np.sqrt(2) * own_step + np.pi / (2 * (span - start)) + 1e-6
    hard = np.concatenate([a[:start + (span - start) // 2], b[(span - start) // 2:]])  # a cut inside the overlap
    assert np.abs(np.diff(hard)).max() > 5 * own_step  # what the test would catch
    np.testing.assert_allclose(joined[:start], a[:start], atol=1e-6)
    np.testing.assert_allclose(joined[span:], b[span - start: total - start], atol=1e-6)  # window 1 alone


def test_uncorrelated_windows_keep_their_loudness_through_the_seam():
    rng = np.random.default_rng(0)
    span, start = 10 * SR, 6 * SR
    a, b = rng.normal(0, 0.1, span), rng.normal(0, 0.1, span)
    joined = crossfade_join([a, b], [0, start], span, start + span)
    rms = [np.sqrt(np.mean(joined[i: i + SR // 2] ** 2)) for i in range(0, len(joined) - SR // 2, SR // 2)]
    assert max(abs(20 * np.log10(r / 0.1)) for r in rms) < 1.0  # within 1 dB everywhere, seam included


def test_join_checks_its_inputs_and_pads_past_the_last_window():
    a = np.ones(10)
    np.testing.assert_array_equal(crossfade_join([a], [0], 10, 12), [1] * 10 + [0, 0])
    with pytest.raises(ValueError, match="must begin at 0 and increase"):
        crossfade_join([a, a], [0, 0], 10, 20)
    with pytest.raises(ValueError, match="fewer than its span"):
        crossfade_join([a[:5]], [0], 10, 10)
