"""Metric math of the av-benchmark protocol (MMAudio), used by the paper's Table 1.

Written from the protocol's description, checked against independent computations in the tests:
  - FD: float64 mean and unbiased covariance (``np.cov``, ddof 1) of each set; ``scipy.linalg.sqrtm`` of
    ``cov_gen @ cov_gt``; when that is not finite, retry once with ``eps * I`` added to both covariances; a
    complex result whose diagonal has an imaginary part above 1e-3 is rejected with :class:`FrechetDistanceError`
    (av-benchmark prints it and returns -1; we raise so that no -1 reaches a table).
  - KL: KL(gt || gen) of the softmax of classifier *logits* (PANNs ``fc_audioset`` output before its sigmoid;
    PaSST head output), per clip summed over classes, then averaged over clips.
  - IS: softmax of the generated clips' PANNs logits, clips shuffled with ``RandomState(2020)``, 10 splits,
    exp(mean_i KL(p_i || mean p)) per split; the mean over splits is the score (std reported too).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import linalg

from scoring.params import IS_SPLITS  # defined there (EvalParams default); also scoring.metrics.IS_SPLITS

log = logging.getLogger(__name__)

FD_EPS = 1e-6
FD_IMAG_ATOL = 1e-3
IS_SEED = 2020


class FrechetDistanceError(ValueError):
    """The matrix square root had a large imaginary part: the FD is not meaningful."""


def _as_2d(name: str, x: np.ndarray, min_rows: int = 1) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array (n_samples, dim), got shape {x.shape}")
    if x.shape[0] < min_rows:
        raise ValueError(f"{name}: needs at least {min_rows} rows, got {x.shape[0]}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name}: contains NaN or inf values; drop those clips before computing metrics")
    return x


def embedding_statistics(emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D) of embeddings (N, D), in float64."""
    emb = _as_2d("embeddings", emb, min_rows=2)
    return emb.mean(axis=0), np.atleast_2d(np.cov(emb, rowvar=False))


_explained: set[str] = set()  # the known warnings already explained in this process (one line each, once)


def _explain_once(key: str, line: str) -> None:
    if key not in _explained:
        _explained.add(key)
        log.warning("%s", line)


def _sqrtm(a: np.ndarray) -> np.ndarray:
    """scipy's matrix square root (``disp`` is deprecated in SciPy 1.17; the default returns the array). scipy's
    ``LinAlgWarning`` (a singular or ill-conditioned product: fewer clips than embedding dimensions, or embeddings
    that do not vary) becomes one explained log line per process; other warnings pass through unchanged."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = linalg.sqrtm(a)
    for w in caught:
        if issubclass(w.category, linalg.LinAlgWarning):
            _explain_once("sqrtm", f"FD: the {a.shape[0]}-d covariance product is singular or ill-conditioned "
                          "(fewer clips than embedding dimensions, or embeddings that do not vary), so its square "
                          "root and the FD are approximate: an FD over so few clips is only indicative (the paper "
                          "scores VGGSound's ~15k test clips).")
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)
    return out[0] if isinstance(out, tuple) else out


@dataclass
class FrechetResult:
    value: float
    retried: bool  # True when eps*I had to be added to the covariances


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = FD_EPS) -> FrechetResult:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 sqrt(S1 S2)), with the av-benchmark retry and imaginary-part check."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f"frechet_distance: shapes differ: mu {mu1.shape} vs {mu2.shape}, "
                         f"sigma {sigma1.shape} vs {sigma2.shape}")
    diff = mu1 - mu2
    covmean = _sqrtm(sigma1 @ sigma2)
    retried = False
    if not np.isfinite(covmean).all():
        log.warning("FD: singular covariance product; adding %g to the diagonals and retrying", eps)
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = _sqrtm((sigma1 + offset) @ (sigma2 + offset))
        retried = True
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=FD_IMAG_ATOL):
            raise FrechetDistanceError(
                f"FD: the matrix square root has an imaginary component of {np.max(np.abs(covmean.imag)):.3g} "
                f"(> {FD_IMAG_ATOL}); the covariances are too ill-conditioned: use more clips than embedding dims")
        covmean = covmean.real
    value = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))
    return FrechetResult(value=value, retried=retried)


def compute_fd(gen_emb: np.ndarray, gt_emb: np.ndarray, eps: float = FD_EPS) -> FrechetResult:
    """FD between generated (N1, D) and ground-truth (N2, D) embeddings (gen first, as av-benchmark)."""
    mu1, s1 = embedding_statistics(gen_emb)
    mu2, s2 = embedding_statistics(gt_emb)
    return frechet_distance(mu1, s1, mu2, s2, eps=eps)


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=1, keepdims=True))


def kl_per_clip(gen_logits: np.ndarray, gt_logits: np.ndarray) -> np.ndarray:
    """KL(softmax(gt) || softmax(gen)) per clip (N,), from paired logits (N, C)."""
    gen = _as_2d("gen_logits", gen_logits)
    gt = _as_2d("gt_logits", gt_logits)
    if gen.shape != gt.shape:
        raise ValueError(f"kl: paired logits must have the same shape, got gen {gen.shape} vs gt {gt.shape}")
    log_p, log_q = _log_softmax(gt), _log_softmax(gen)
    return (np.exp(log_p) * (log_p - log_q)).sum(axis=1)  # (N,)


def compute_kl(gen_logits: np.ndarray, gt_logits: np.ndarray) -> float:
    """Mean over clips of KL(gt || gen) on softmax of logits (av-benchmark ``kl_softmax``)."""
    return float(kl_per_clip(gen_logits, gt_logits).mean())


def inception_score(logits: np.ndarray, splits: int = IS_SPLITS, seed: int | None = IS_SEED,
                    ) -> tuple[float, float]:
    """(mean, std) over ``splits`` of exp(E_x KL(p(y|x) || p(y))), softmax of logits (N, C) in float64."""
    x = _as_2d("logits", logits)
    n = x.shape[0]
    if n < splits:
        raise ValueError(f"inception score with {splits} splits needs at least {splits} clips, got {n}")
    if seed is not None:
        x = x[np.random.RandomState(seed).permutation(n)]
    log_p = _log_softmax(x)
    p = np.exp(log_p)
    scores = []
    for i in range(splits):
        lo, hi = i * n // splits, (i + 1) * n // splits
        p_c, log_p_c = p[lo:hi], log_p[lo:hi]
        log_q = np.log(p_c.mean(axis=0, keepdims=True))  # (1, C) marginal of the split
        scores.append(float(np.exp((p_c * (log_p_c - log_q)).sum(axis=1).mean())))
    return float(np.mean(scores)), float(np.std(scores))


def cosine_score(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-row cosine similarity x 100 (the IB-score scale of the paper's table)."""
    a, b = _as_2d("a", a), _as_2d("b", b)
    num = (a * b).sum(axis=1)
    den = np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-8)
    return 100.0 * num / den
