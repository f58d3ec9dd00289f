"""The baseline: CLIP-Dissect's SoftWPMI (Oikarinen & Weng 2023, similarity.soft_wpmi) ranking of a
concept list, on the fit half. With one target, log p(d) is the same soft-membership statistic averaged
over all fit images (the original averages it over the other neurons of a layer)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .problem import Explainer, Problem, Settings


@dataclass
class Config:
    top_frac: float = 0.1      # the images with the highest f that count as "the neuron fires"
    a: float = 10.0            # softmax temperature over concepts
    lam: float = 1.0           # weight of log p(concept) against log p(concept | top images)
    p_start: float = 0.998     # soft membership of the top image ...
    p_end: float = 0.97        # ... falling to this at the k-th


def soft_wpmi(sims: np.ndarray, order: np.ndarray, cfg: Config) -> np.ndarray:
    """SoftWPMI of every concept. sims: (n, M) raw cosines; order: image indices, highest f first -> (M,)."""
    probs = torch.from_numpy(sims).float().mul(cfg.a).softmax(dim=1).numpy()      # softmax over concepts
    k = max(3, int(round(cfg.top_frac * len(sims))))
    p_in = (cfg.p_start - np.arange(k) / k * (cfg.p_start - cfg.p_end))[:, None]  # (k, 1)
    log_d_e = np.log(1 + p_in * (probs[order[:k]] - 1) + 1e-7).sum(0)             # (M,)
    log_d = k * np.log(1 + p_in.mean() * (probs - 1) + 1e-7).mean(0)              # (M,)
    return log_d_e - cfg.lam * log_d


def run(ex: Explainer, p: Problem, s: Settings, cfg: Config):
    concepts = list(dict.fromkeys(s.concepts or ex.concepts))
    rows = [ex.ids(c) for c in concepts]
    feats = ex.features(rows)
    sims = p.emb[p.fit] @ feats.T     # (n, M) raw: the softmax over concepts ignores centring
    wpmi = soft_wpmi(sims, np.argsort(-p.f[p.fit], kind="stable"), cfg)
    order = np.argsort(-wpmi)[:s.keep]
    out = [ex.evaluate(p, concepts[i], feats[i], "dissect", s.prior_weight, 0.0) for i in order]
    for e, i in zip(out, order):
        e.extra["soft_wpmi"] = float(wpmi[i])
    for e, lp in zip(out, ex.prior.log_prob([e.text for e in out])):
        e.log_prior = float(lp)
    return out                              # the baseline ranks by SoftWPMI, not by our fit
