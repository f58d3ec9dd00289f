"""Explain every unit (or logit) of a layer in one job, as CLIP-Dissect labels all neurons of a layer:
the images are embedded once, every candidate's CLIP_t is computed once, and Spearman's rho of every
unit against every candidate is one matrix product of standardised ranks.

    acts = layer_activations(classifier, "penultimate", images)          # (N, U)
    table = explain_layer(bundle, images, acts)                          # -> LayerTable, one row per unit
    table.to_csv("units.csv"); table.to_json("units.json"); table.explanations[3].predict(new_images)

Candidates: the partial-description claims (partial.py) on a ShapesWorld bundle, otherwise the concept
list; each unit gets the best by partial's fit-half objective (rho minus the attribute penalty), and
the same held-out figures as explain(): rho(f, h(CLIP_t)) with ties, rho(f, CLIP_t), R^2 and the ridge
probe fitted on the same labels. Compositions and text search are per-function work: explain() a unit
the table flags to get them.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from scipy.stats import rankdata
from tqdm.auto import tqdm

from .errors import ExplainError
from .explanation import Explanation
from .partial import Config as PartialConfig, claim_bank
from .defaults import LAYER_COLUMNS
from .problem import explainer_for
from .stats import spearman_ties, standardise, rank_columns, ridge_probe


POOLS = {"mean": lambda a: a.mean(2), "max": lambda a: a.amax(2)}    # (B, C, H*W) -> (B, C)


@dataclass
class LayerTable:
    """One row per unit (dicts with LAYER_COLUMNS' keys, plus "claim"), and each unit's Explanation (a predictor)."""
    rows: list[dict]
    explanations: list[Explanation]
    seconds: float

    def to_dataframe(self):
        import pandas as pd
        return pd.DataFrame(self.rows, columns=LAYER_COLUMNS)

    def to_csv(self, path) -> Path:
        path = Path(path)
        self.to_dataframe().to_csv(path, index=False)
        return path

    def to_json(self, path) -> Path:
        path = Path(path)
        path.write_text(json.dumps({"seconds": self.seconds, "rows": self.rows}, indent=1, ensure_ascii=False))
        return path


@torch.no_grad()
def layer_activations(model: torch.nn.Module, layer: str, images, preprocess=None, batch_size: int = 256,
                      pool: str = "mean") -> np.ndarray:
    """The output of `model`'s module named `layer` (model.named_modules(); "" is the whole model, whose
    dict of heads is concatenated) for every image -> (N, U): a conv channel pooled over space, by its mean
    (pool="mean": how much of the image drives it) or its maximum ("max": whether anything does).
    preprocess: a list of images -> (B, 3, H, W) tensor; default: the model's own `tensor` method (the
    ShapesWorld classifier has one), else 224x224 with ImageNet normalisation."""
    from .targets import imagenet_tensor
    if pool not in POOLS:
        raise ExplainError(f"pool must be one of {', '.join(POOLS)}, not {pool!r}")
    modules = dict(model.named_modules())
    if layer not in modules:
        raise ExplainError(f"The model has no layer {layer!r}; layers include {', '.join(n for n in modules if n)}")
    if preprocess is None:
        if hasattr(model, "tensor"):
            preprocess = model.tensor
        else:
            preprocess = lambda ims: torch.stack([imagenet_tensor(im) for im in ims])  # noqa: E731
    got = []

    def hook(_m, _i, out):
        out = out[0] if isinstance(out, tuple) else out
        got.append(torch.cat(list(out.values()), 1) if isinstance(out, dict) else out)
    model.eval()
    scripted = isinstance(model, torch.jit.ScriptModule)       # TorchScript takes no hooks: its output only
    if scripted and layer != "":
        raise ExplainError("A TorchScript model takes no forward hooks, so only its output (layer \"\") can be read; "
                           "save it with torch.export.save(torch.export.export(model, (example,)), 'model.pt2') "
                           "to explain its inner layers")
    handle = None if scripted else modules[layer].register_forward_hook(hook)
    images, out = list(images), []
    try:
        for i in range(0, len(images), batch_size):
            got.clear()
            y = model(preprocess(images[i:i + batch_size]))
            a = y if scripted else got[0]
            out.append(POOLS[pool](a.flatten(2)) if a.ndim > 2 else a)
    finally:
        if handle is not None:
            handle.remove()
    return torch.cat(out).double().numpy()


def explain_layer(bundle, images, activations, names: list[str] | None = None, seed: int = 0,
                  attribute_penalty: float = PartialConfig.attribute_penalty, concepts: list[str] | None = None,
                  progress=None) -> LayerTable:
    """Explain every column of `activations` ((N, U): one unit or logit a column, N images) at once.
    images: PIL images / paths, or their CLIP embeddings (N, D). names: one per unit (default "unit i")."""
    import time
    t0 = time.time()
    acts = np.asarray(activations, dtype=np.float64)
    if acts.ndim == 1:
        acts = acts[:, None]
    if acts.ndim != 2 or not np.isfinite(acts).all():
        raise ExplainError(f"activations must be a finite (images, units) array, got shape {acts.shape}")
    names = list(names) if names is not None else [f"unit {i}" for i in range(acts.shape[1])]
    if len(names) != acts.shape[1]:
        raise ExplainError(f"{len(names)} names for {acts.shape[1]} units")
    ex = explainer_for(bundle)
    varying = np.ptp(acts, axis=0) > 0
    if not varying.any():
        raise ExplainError("Every unit is constant on these images: nothing to explain")
    # one problem for the split and the embedding (its scores: any varying unit; each unit is read below)
    p = ex.problem(images, acts[:, int(np.argmax(varying))], seed, centre=True)
    if len(p.emb) != len(acts):
        raise ExplainError(f"{len(acts)} rows of activations for {len(p.emb)} images")
    texts, vectors, n_attr, claims = _candidates(ex, p, concepts)
    x = p.emb @ vectors.T                                                            # (N, C) CLIP_t, once
    rf = standardise(rankdata(acts[p.fit], axis=0))                                 # (n, U), ties averaged
    rho = rf.T @ rank_columns(x[p.fit])                                              # (U, C)
    obj = np.maximum(rho, 0) - attribute_penalty * (n_attr[None] - 1)
    best = np.argsort(-obj, axis=1)[:, :3]                     # the best, and the runner-up among the next two
    probe = ridge_probe(p.emb, acts, p.fit, p.held).reshape(len(p.held), -1)       # (held, U), one unit too
    rows, out = [], []
    for u in tqdm(range(acts.shape[1]), desc="explain: layer", disable=progress is False):
        f = acts[:, u]
        if not varying[u]:
            rows.append(dict(zip(LAYER_COLUMNS, [names[u], "(constant on these images)", 0.0, 0.0, 0.0, 0.0, "", 0.0])))
            out.append(None)
            continue
        c = best[u, 0]
        e = ex.evaluate(replace(p, f=f), texts[c], None, "layer", 0.0, 0.0, vector=vectors[c])
        e.objective, e.claim = float(obj[u, c]), claims[c]
        e.probe_spearman = spearman_ties(f[p.held], probe[:, u])
        out.append(e)
        rows.append(dict(zip(LAYER_COLUMNS, [names[u], e.text, round(e.spearman_h, 4), round(e.spearman, 4), round(e.r2, 4),
                                       round(e.probe_spearman, 4), _runner_up(texts, best[u]), round(e.objective, 4)])))
        rows[-1]["claim"] = claims[c]
    seconds = time.time() - t0
    for e in out:
        if e is not None:
            e.seconds = seconds
    return LayerTable(rows, out, seconds)


def _runner_up(texts, idx) -> str:
    """The best other text (a claim's two readings share one)."""
    return next((texts[i] for i in idx[1:] if texts[i] != texts[idx[0]]), "")


def _candidates(ex, p, concepts):
    """(texts, CLIP_t directions (C, D), attributes per text (C,), claims): every claim in every reading
    (partial.py) on a ShapesWorld bundle, else the concept list's texts (centred)."""
    if ex.shapes_world and not concepts:
        bank = claim_bank(ex)
        v = bank.vectors(p)                                                           # (M, R, D)
        r = v.shape[1]
        return (bank.texts * r, v.transpose(1, 0, 2).reshape(-1, v.shape[2]), np.tile(bank.n_attributes, r),
                [dict(c) for c in bank.claims] * r)
    texts = list(dict.fromkeys(concepts or ex.concepts))
    feats = ex.features([ex.ids(t) for t in texts])
    return texts, p.vector(feats), np.ones(len(texts)), [None] * len(texts)

