"""Textual inversion: k learned token embeddings after start-of-text ([SOT] v1..vk [EOT]), `restarts`
at once, trained with Adam to maximise the Pearson correlation of CLIP_t with f's ranks on the fit half;
read out as the nearest tokens of the prior's restricted vocabulary (every combination of each
position's 3 nearest, and their prefixes), ranked on the fit half; the learned vectors themselves are
saved in diffusers' learned_embeds.safetensors format, one file per restart that produced a result."""
from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .problem import Explainer, Problem, Settings
from .tokens import with_prefixes, save_learned_embeds


@dataclass
class Config:
    k: int = 2                 # learned vectors (tokens) per text
    restarts: int = 16         # texts optimised at once from random starts
    lr: float = 0.05           # Adam's learning rate


def run(ex: Explainer, p: Problem, s: Settings, cfg: Config):
    budget, prior_weight, seed, keep, progress, out_dir = s.budget, s.prior_weight, s.seed, s.keep, s.progress, s.out_dir
    k, restarts, lr = cfg.k, cfg.restarts, cfg.lr
    torch.manual_seed(seed)
    E = ex.tower.embedding.detach()                                        # (V, W)
    space_rows = E[ex.space.ids]                                            # (K, W) CLIP rows of the space
    init = torch.randint(0, len(ex.space), (restarts, k))
    v = space_rows[init].clone().requires_grad_(True)                          # (R, k, W)
    opt = torch.optim.Adam([v], lr=lr)
    img = torch.from_numpy(p.emb[p.fit]).float()                               # (n, D)
    base = torch.from_numpy(p.base[p.fit]).float()                             # (n,)
    target = torch.from_numpy(p.rf_fit).float()                                # (n,) standardised ranks
    sot, eot = E[ex.sot], E[ex.eot]
    ends = torch.full((restarts,), k + 1)
    for _ in tqdm(range(budget), desc="explain: inversion", disable=not progress):
        x = torch.cat([sot.expand(restarts, 1, -1), v, eot.expand(restarts, 1, -1)], 1)   # (R, k+2, W)
        sims = ex.tower.features(x, ends) @ img.T - base                              # (R, n)
        sims = sims - sims.mean(1, keepdim=True)
        pearson = (sims @ target) / sims.norm(dim=1).clamp_min(1e-8)                   # (R,)
        loss = -pearson.sum()
        opt.zero_grad()
        loss.backward(inputs=[v])                # the learned tokens only: the bundle's CLIP is shared, and frozen
        opt.step()
    v = v.detach()
    # read out: per position the 3 nearest tokens of the space (cosine), every combination
    near = F.normalize(v, dim=-1) @ F.normalize(space_rows, dim=-1).T                 # (R, k, K)
    top = near.topk(3, dim=-1).indices                                                   # (R, k, 3)
    cands: dict[tuple, int] = {}
    for r in range(restarts):
        combos = [()]
        for j in range(k):
            combos = [c + (int(ex.space.ids[top[r, j, m]]),) for c in combos for m in range(3)]
        for c in combos:
            for i in range(len(c), 0, -1):
                cands.setdefault(c[:i], r)
    rows = [c for c in with_prefixes(cands) if ex.eot not in c]
    obj, _ = ex.fit_scores(p, rows, prior_weight, fluency=False)
    best = [rows[i] for i in np.argsort(-obj)[:max(keep, 20)]]
    out = ex.finish(p, best, "inversion", prior_weight, keep, fluency=False)
    # the learned tokens themselves: held-out rho, and a diffusers learned_embeds file per explanation
    with torch.no_grad():
        x = torch.cat([sot.expand(restarts, 1, -1), v, eot.expand(restarts, 1, -1)], 1)
        learned = ex.tower.features(x, ends).numpy()                                  # (R, D)
    out_dir = Path(out_dir or tempfile.mkdtemp(prefix="clipgpt-explain-"))
    for e in out:
        r = cands.get(tuple(e.extra["ids"]), 0)
        ev = ex.evaluate(p, e.text, learned[r], "inversion", 0.0, 0.0)
        e.learned_spearman = ev.spearman
        name = "<f-" + hashlib.sha1(f"{seed}-{r}-{v[r].sum().item():.6f}".encode()).hexdigest()[:6] + ">"
        e.token, e.token_file = name, str(save_learned_embeds(out_dir / f"restart{r}" / "learned_embeds.safetensors",
                                                              name, v[r]))
    return out
