"""Metric math against independent computations (eigenvalue FD, hand-written KL and IS)."""

import math

import numpy as np
import pytest

from scoring import metrics as M


def _psd_sqrt(s):
    w, v = np.linalg.eigh(s)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def _fd_eig(a, b):
    """FD with Tr sqrt(S1 S2) = sum sqrt(eig(sqrt(S1) S2 sqrt(S1))) (symmetric, no sqrtm)."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    r = _psd_sqrt(s1)
    ev = np.linalg.eigvalsh(r @ s2 @ r)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(np.clip(ev, 0, None)).sum())


def test_fd_matches_eigenvalue_formula():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(200, 6)) @ rng.normal(size=(6, 6))
    b = rng.normal(loc=0.5, size=(150, 6)) @ rng.normal(size=(6, 6))
    r = M.compute_fd(a, b)
    assert not r.retried
    assert r.value == pytest.approx(_fd_eig(a, b), rel=1e-8, abs=1e-8)
    assert M.compute_fd(b, a).value == pytest.approx(r.value, rel=1e-8)


def test_fd_identical_sets_is_zero():
    a = np.random.default_rng(1).normal(size=(50, 4))
    assert abs(M.compute_fd(a, a).value) < 1e-6


def test_fd_retry_path_adds_eps_to_both_covariances(monkeypatch):
    calls = []
    real = M.linalg.sqrtm

    def fake_sqrtm(x, *args, **kwargs):
        calls.append(np.array(x))
        return np.full_like(x, np.nan) if len(calls) == 1 else real(x)

    monkeypatch.setattr(M.linalg, "sqrtm", fake_sqrtm)
    s1, s2 = np.diag([1.0, 0.0]), np.diag([4.0, 0.0])  # singular covariances
    r = M.frechet_distance(np.zeros(2), s1, np.ones(2), s2)
    assert r.retried and len(calls) == 2
    np.testing.assert_allclose(calls[1], (s1 + 1e-6 * np.eye(2)) @ (s2 + 1e-6 * np.eye(2)))
    expected = 2.0 + 1.0 + 4.0 - 2 * (math.sqrt((1 + 1e-6) * (4 + 1e-6)) + 1e-6)
    assert r.value == pytest.approx(expected, abs=1e-9)


def test_fd_singular_covariance_few_samples_is_finite():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(4, 6)), rng.normal(size=(5, 6))  # rank-deficient covariances
    r = M.compute_fd(a, b)
    assert np.isfinite(r.value)
    assert r.value == pytest.approx(_fd_eig(a, b), rel=1e-3, abs=1e-3)


def test_fd_rejects_large_imaginary_part():
    with pytest.raises(M.FrechetDistanceError, match="imaginary"):
        M.frechet_distance(np.zeros(2), np.diag([-1.0, 1.0]), np.zeros(2), np.eye(2))


def test_fd_rejects_nan_embeddings():
    a = np.ones((5, 3))
    a[2, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        M.compute_fd(a, np.ones((5, 3)))


def _softmax(row):
    e = [math.exp(v) for v in row]
    return [v / sum(e) for v in e]


def test_kl_by_hand():
    gen = np.array([[1.0, 2.0, 0.5], [0.0, 0.0, 3.0]])
    gt = np.array([[2.0, 1.0, 0.0], [1.0, -1.0, 0.5]])
    per = []
    for g, t in zip(gen, gt):
        p, q = _softmax(t), _softmax(g)  # KL(gt || gen)
        per.append(sum(pi * math.log(pi / qi) for pi, qi in zip(p, q)))
    np.testing.assert_allclose(M.kl_per_clip(gen, gt), per, rtol=1e-12)
    assert M.compute_kl(gen, gt) == pytest.approx(sum(per) / 2, rel=1e-12)
    assert M.compute_kl(gt, gt) == pytest.approx(0.0, abs=1e-12)


def test_inception_score_by_hand():
    rng = np.random.default_rng(3)
    logits = rng.normal(scale=3, size=(20, 5))
    perm = np.random.RandomState(2020).permutation(20)
    shuffled = logits[perm]
    scores = []
    for i in range(10):
        chunk = [_softmax(r) for r in shuffled[i * 2:(i + 1) * 2]]
        marg = [sum(c[j] for c in chunk) / len(chunk) for j in range(5)]
        kl = [sum(c[j] * math.log(c[j] / marg[j]) for j in range(5)) for c in chunk]
        scores.append(math.exp(sum(kl) / len(kl)))
    mean, std = M.inception_score(logits)
    assert mean == pytest.approx(np.mean(scores), rel=1e-10)
    assert std == pytest.approx(np.std(scores), rel=1e-8)


def test_inception_score_extremes_and_errors():
    confident = np.eye(4)[np.arange(40) % 4] * 50.0  # 4 equally used, one-hot classes
    mean, _ = M.inception_score(confident, splits=1, seed=None)
    assert mean == pytest.approx(4.0, rel=1e-6)
    assert M.inception_score(np.zeros((20, 4)))[0] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least 10 clips"):
        M.inception_score(np.zeros((5, 4)))


def test_cosine_score_scale():
    a = np.array([[1.0, 0.0], [1.0, 1.0]])
    b = np.array([[1.0, 0.0], [-1.0, -1.0]])
    np.testing.assert_allclose(M.cosine_score(a, b), [100.0, -100.0])
