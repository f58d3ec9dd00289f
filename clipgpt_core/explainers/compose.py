"""Compositions: "A or B", "A and B", "A but not B" (and "A or B but not C") as sparse non-negative combinations of at most
`max_terms` CLIP_t's (SpLiCE-style: a "not" is a non-negative weight on the negated CLIP_t); and weighted sums of
more claims, for units that respond to several things by amounts (weighted_sum).

The weights are non-negative least squares of f's standardised ranks on the z-scored CLIP_t's of the
fit half, so the combination is again one direction in image-embedding space (it predicts like any
explanation). A composition is kept only when its fit-half objective (rho minus the attribute penalty
of all its terms) beats the best single claim by `compose_margin`. Whether positive terms read as "and"
or "or" is decided on the fit half too: min(z_A, z_B) (both must hold) against max(z_A, z_B) (either).
"""
from __future__ import annotations

import itertools

import numpy as np
from scipy.optimize import nnls

from .stats import rank_columns


def compositions(p, texts: list[str], vectors: np.ndarray, n_attributes: np.ndarray, best_single: float,
                 cfg) -> list[tuple[str, np.ndarray, float, list[dict]]]:
    """-> [(text, CLIP_t direction (D,), fit-half objective, terms)] that beat best_single by the margin."""
    x = p.emb[p.fit] @ vectors.T                                         # (n, T) CLIP_t of each candidate
    mu, sd = x.mean(0), x.std(0) + 1e-12
    z = (x - mu) / sd
    target = p.rf_fit * np.sqrt(len(p.fit))                              # standardised ranks, unit variance
    found = {}                      # ((term, sign), ...) -> (objective, weights)
    for size in range(2, cfg.max_terms + 1):
        for combo in itertools.combinations(range(len(texts)), size):
            if any(_overlaps(texts[a], texts[b]) for a, b in itertools.combinations(combo, 2)):
                continue
            for signs in itertools.product((1.0, -1.0), repeat=size):
                # "A", "A or/and B", each optionally "but not C": one or two claimed terms, the first claimed
                if signs[0] < 0 or signs.count(1.0) > 2:
                    continue
                a = z[:, combo] * np.array(signs)
                w, _ = nnls(a, target)
                if (w <= 1e-6).any():                                    # a term the fit does not use
                    continue
                rho = float(rank_columns((a @ w)[:, None])[:, 0] @ p.rf_fit)
                found[tuple(zip(combo, signs))] = (rho - cfg.attribute_penalty * (n_attributes[list(combo)].sum() - 1), w)
    out = []
    for key, (objective, w) in found.items():
        # every term must pay for itself: beat the best single claim and every composition without it
        subs = [found[k][0] for k in itertools.combinations(key, len(key) - 1) if k in found]
        if objective <= max([best_single] + subs) + cfg.compose_margin:
            continue
        combo, signs = [k[0] for k in key], [k[1] for k in key]
        vector = (w * np.array(signs) / sd[combo]) @ vectors[combo]
        terms = [{"text": texts[i], "weight": float(wi), "sign": int(si)} for i, wi, si in zip(combo, w, signs)]
        out.append((_name(z[:, combo], signs, texts, combo, p.rf_fit), vector.astype(np.float32), objective, terms))
    return sorted(out, key=lambda t: -t[2])[:3]


def weighted_sum(p, texts: list[str], vectors: np.ndarray, n_attributes: np.ndarray, head: int, best: float,
                 cfg) -> tuple[str, np.ndarray, float, list[dict]] | None:
    """A unit that responds to several things by amounts ("0.55 × red + 0.30 × a star − 0.15 × on a black
    background"): the headline claim `head` (the best claim of one attribute), then claims chosen one at a time
    (orthogonal matching pursuit: the claim whose z-scored CLIP_t best follows what the sum so far misses), signed
    least squares on f's standardised ranks over the fit half. Starting from the headline keeps the answer a
    reader looks for first and minimal ("red", then "+ 0.25 × small orange"); it costs no fit (OMP from the
    strongest claim reaches the same rho here, docs/results.md). It stops when a term no longer pays
    `sum_penalty` an attribute (an amount needs less evidence than a claim that f is about it); the sum is kept
    only with two terms or more and a fit-half objective above `best` (the best claim or composition) by
    `sum_margin`.
    -> (text, direction (D,), objective, terms), the headline the first term, or None."""
    x = p.emb[p.fit] @ vectors.T
    mu, sd = x.mean(0), x.std(0) + 1e-12
    z = (x - mu) / sd
    target = p.rf_fit * np.sqrt(len(p.fit))

    def fit(trial: list[int]) -> tuple[np.ndarray, float]:
        w, *_ = np.linalg.lstsq(z[:, trial], target, rcond=None)
        rho = float(rank_columns((z[:, trial] @ w)[:, None])[:, 0] @ p.rf_fit)
        return w, rho - cfg.sum_penalty * (n_attributes[trial].sum() - 1)

    def overlapping(i: int) -> np.ndarray:        # (M,) the claims that restate claim i
        return np.array([_overlaps(texts[i], t) for t in texts])

    chosen = [head]
    w, objective = fit(chosen)
    blocked = overlapping(head)
    while len(chosen) < cfg.sum_terms:
        residual = target - z[:, chosen] @ w
        score = np.where(blocked, -np.inf, np.abs(z.T @ residual))
        j = int(np.argmax(score))
        if not np.isfinite(score[j]):
            break
        w_trial, obj = fit(chosen + [j])
        if obj <= objective:
            break
        chosen, w, objective = chosen + [j], w_trial, obj
        blocked |= overlapping(j)
    if len(chosen) < 2 or objective <= best + cfg.sum_margin:
        return None
    share = w / np.abs(w).sum()
    order = [0] + [i for i in np.argsort(-share) if i != 0]         # the headline, then the largest weight first
    parts = []
    for k, i in enumerate(order):
        term = f"{abs(share[i]):.2f} × {texts[chosen[i]]}"
        sign = "−" if share[i] < 0 else "+"
        parts.append(f"{sign} {term}" if k else ("−" + term if sign == "−" else term))
    text = " ".join(parts)
    vector = (w / sd[chosen]) @ vectors[chosen]
    terms = [{"text": texts[chosen[i]], "weight": float(abs(share[i])), "sign": int(np.sign(share[i]))} for i in order]
    return text, vector.astype(np.float32), objective, terms


def _overlaps(a: str, b: str) -> bool:
    """"red" and "a red star" claim the same thing twice: not a composition."""
    return a in b or b in a


def _name(z: np.ndarray, signs, texts, combo, rf_fit) -> str:
    pos = [i for i, s in enumerate(signs) if s > 0]
    neg = [i for i, s in enumerate(signs) if s < 0]
    text = texts[combo[pos[0]]]
    if len(pos) > 1:
        both, either = z[:, pos].min(1), z[:, pos].max(1)
        rho = rank_columns(np.stack([both, either], 1)).T @ rf_fit
        text = (" and " if rho[0] >= rho[1] else " or ").join(texts[combo[i]] for i in pos)
    if neg:
        text += " but not " + " or ".join(texts[combo[i]] for i in neg)
    return text
