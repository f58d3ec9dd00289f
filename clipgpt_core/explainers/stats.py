"""Rank statistics every method shares: Spearman's rho (vectorised over many texts), its ceiling under
ties, the monotone fit h, R^2, and the ridge-probe reference an explanation is read against."""
from __future__ import annotations

import numpy as np
from scipy.stats import rankdata
from sklearn.isotonic import IsotonicRegression


def standardise(a: np.ndarray, axis=0) -> np.ndarray:
    a = a - a.mean(axis=axis, keepdims=True)
    n = np.linalg.norm(a, axis=axis, keepdims=True)
    return a / np.where(n == 0, 1, n)


def rank_columns(x: np.ndarray) -> np.ndarray:
    """Standardised ranks of every column of x (n, M). CLIP similarities do not tie, so ranking by
    argsort is exact (and much faster than rankdata per column)."""
    r = np.empty_like(x, dtype=np.float64)
    order = np.argsort(x, axis=0)
    np.put_along_axis(r, order, np.arange(x.shape[0], dtype=np.float64)[:, None].repeat(x.shape[1], 1), axis=0)
    return standardise(r)


def spearman_columns(f_ranks_std: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Spearman rho between f (its standardised ranks, (n,) or (n, U)) and every column of x (n, M)
    -> (M,) or (U, M)."""
    return f_ranks_std.T @ rank_columns(x)


def spearman_ceiling(f: np.ndarray) -> float:
    """The largest Spearman rho any tie-free x can reach with f (below 1 when f has ties, e.g. a 0/1 f
    with 25% ones caps rho at sqrt(3 p (1-p)) = 0.75)."""
    rf = standardise(rankdata(f))
    return float(rf @ standardise(np.arange(len(f), dtype=np.float64)[np.argsort(np.argsort(f, kind="stable"))]))


def spearman_ties(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rho with ties in both (average ranks); 0 when either is constant."""
    return float(standardise(rankdata(a)) @ standardise(rankdata(b)))



def monotone_fit(x_fit: np.ndarray, f_fit: np.ndarray, increasing: bool) -> IsotonicRegression:
    """h: the isotonic regression of f on x (clipped outside the fitted range)."""
    return IsotonicRegression(increasing=increasing, out_of_bounds="clip").fit(x_fit, f_fit)


def r2_score(f: np.ndarray, pred: np.ndarray) -> float:
    ss = float(((f - f.mean()) ** 2).sum())
    return 1.0 - float(((f - pred) ** 2).sum()) / ss if ss > 0 else 0.0


def ridge_probe(emb: np.ndarray, f: np.ndarray, fit: np.ndarray, held: np.ndarray) -> np.ndarray:
    """The reference an explanation is read against: a ridge regression of f on the whole image
    embedding, fitted on the fit half (the labels the explanation had), read on the held-out half.
    Any text's CLIP_t is one linear readout of the embedding, so this is about the most a single text
    could reach with this CLIP. f: (N,) or (N, U) (one alpha per column) -> held-out predictions."""
    from sklearn.linear_model import RidgeCV
    model = RidgeCV(alphas=np.logspace(-3, 3, 13), alpha_per_target=f.ndim > 1)
    return model.fit(emb[fit], f[fit]).predict(emb[held])
