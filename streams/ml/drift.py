"""Drift statistics between a reference window and the current one (numpy/scipy, no Kafka)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
from scipy import stats


def mean_cosine_shift(reference: np.ndarray, current: np.ndarray) -> float:
    """1 - cosine between the mean embeddings of two windows (0: same centre)."""
    a, b = reference.mean(axis=0), current.mean(axis=0)
    denominator = float(np.linalg.norm(a) * np.linalg.norm(b))
    return 0.0 if denominator == 0 else float(1.0 - a @ b / denominator)


def mmd_rbf(reference: np.ndarray, current: np.ndarray, max_points: int = 300, seed: int = 0) -> float:
    """Unbiased squared maximum mean discrepancy with an RBF kernel (median-distance bandwidth)."""
    rng = np.random.default_rng(seed)
    if len(reference) > max_points:
        reference = reference[rng.choice(len(reference), max_points, replace=False)]
    if len(current) > max_points:
        current = current[rng.choice(len(current), max_points, replace=False)]
    if len(reference) < 2 or len(current) < 2:
        return 0.0
    both = np.vstack([reference, current]).astype(np.float64)
    squared = np.sum(both**2, axis=1)
    distances = np.maximum(squared[:, None] + squared[None, :] - 2 * both @ both.T, 0.0)
    positive = distances[distances > 0]
    bandwidth = float(np.median(positive)) if positive.size else 1.0
    kernel = np.exp(-distances / bandwidth)
    n = len(reference)
    k_xx, k_yy, k_xy = kernel[:n, :n], kernel[n:, n:], kernel[:n, n:]
    m = len(current)
    xx = (k_xx.sum() - np.trace(k_xx)) / (n * (n - 1))
    yy = (k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(max(xx + yy - 2 * k_xy.mean(), 0.0))


def ks_statistic(reference: Sequence[float], current: Sequence[float]) -> float:
    """Two-sample Kolmogorov-Smirnov statistic (0: same distribution, 1: disjoint)."""
    if len(reference) == 0 or len(current) == 0:
        return 0.0
    return float(stats.ks_2samp(reference, current).statistic)


def total_variation(reference: Sequence[object], current: Sequence[object]) -> float:
    """Total variation distance between two categorical mixes (0: same mix, 1: disjoint)."""
    if len(reference) == 0 or len(current) == 0:
        return 0.0
    a, b = Counter(reference), Counter(current)
    return 0.5 * sum(abs(a[k] / len(reference) - b[k] / len(current)) for k in a.keys() | b.keys())
