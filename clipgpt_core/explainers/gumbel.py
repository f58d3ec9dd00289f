"""Seed 000's proposal: a straight-through Gumbel-softmax token sequence over the prior's restricted
vocabulary. Position l's logits are the prior's next-token log-probs (given the sampled tokens before
it) plus learned offsets theta[c, l]; loss = -Pearson(CLIP_t(tokens), rank f) - prior_weight x log p(tokens),
on the fit half. Every sequence seen while training, the final argmax sequences and their prefixes are
then ranked on the fit half like search's candidates."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .problem import Explainer, Problem, Settings
from .tokens import with_prefixes


@dataclass
class Config:
    chains: int = 16                  # sequences optimised at once
    lengths: tuple = (2, 3, 4, 5)     # their lengths in tokens (chain c has lengths[c % len])
    lr: float = 0.3                   # Adam's learning rate on the offsets
    tau: tuple = (1.0, 0.3)           # Gumbel-softmax temperature, annealed geometrically from / to
    fit_weight: float = 1.0           # weight of the Pearson term against the prior's


def run(ex: Explainer, p: Problem, s: Settings, cfg: Config):
    budget, prior_weight, seed, keep, progress = s.budget, s.prior_weight, s.seed, s.keep, s.progress
    chains, lengths, lr, tau, fit_weight = cfg.chains, cfg.lengths, cfg.lr, cfg.tau, cfg.fit_weight
    torch.manual_seed(seed)
    K, L = len(ex.space), max(lengths)
    clip_rows = ex.tower.embedding.detach()[ex.space.ids]                  # (K, W) CLIP input rows
    prior_rows = ex.space.embedding                                           # (K, W) prior input rows
    lens = torch.tensor([lengths[c % len(lengths)] for c in range(chains)])    # (C,)
    theta = torch.zeros(chains, L, K, requires_grad=True)
    opt = torch.optim.Adam([theta], lr=lr)
    img = torch.from_numpy(p.emb[p.fit]).float()
    base = torch.from_numpy(p.base[p.fit]).float()
    target = torch.from_numpy(p.rf_fit).float()
    E = ex.tower.embedding.detach()
    sot_c, eot_c = E[ex.sot], E[ex.eot]
    sot_p = ex.prior.gpt.token_embedding.weight[ex.sot].detach()
    not_eot = torch.zeros(K)
    not_eot[ex.space.eot_k] = float("-inf")
    seen: set[tuple] = set()

    def decode(hard: bool, temp: float):
        """-> one-hot (C, L, K), total prior log p (C,)"""
        xp = sot_p.expand(chains, 1, -1)
        ys, lps = [], []
        for pos in range(L + 1):
            logp = ex.space.logits(ex.prior.gpt.hidden(xp)[:, -1]).float().log_softmax(-1)   # (C, K)
            if pos == L:
                break
            z = logp + theta[:, pos] + not_eot
            if hard:
                y = F.gumbel_softmax(z, tau=temp, hard=True)
            else:
                y = F.one_hot(z.argmax(-1), K).float()
            ys.append(y)
            lps.append((y * logp.masked_fill(torch.isinf(logp), 0)).sum(-1))
            xp = torch.cat([xp, (y @ prior_rows)[:, None]], 1)
        y = torch.stack(ys, 1)                                                  # (C, L, K)
        # log p(EOT) right after each chain's last token
        full = ex.space.logits(ex.prior.gpt.hidden(xp)).float().log_softmax(-1)   # (C, L+1, K)
        lp_eot = full[torch.arange(chains), lens, ex.space.eot_k]
        lp = torch.stack(lps, 1)                                                 # (C, L)
        mask = torch.arange(L)[None] < lens[:, None]
        return y, (lp * mask).sum(1) + lp_eot                               # total log p (C,)

    for step in tqdm(range(budget), desc="explain: gumbel", disable=not progress):
        temp = tau[0] * (tau[1] / tau[0]) ** (step / max(1, budget - 1))
        y, logp = decode(True, temp)
        xc = y @ clip_rows                                                        # (C, L, W)
        pos = torch.arange(L + 2)[None]
        x = torch.cat([sot_c.expand(chains, 1, -1), xc, torch.zeros(chains, 1, xc.shape[-1])], 1)
        x = torch.where((pos == lens[:, None] + 1)[..., None], eot_c.expand_as(x), x)     # EOT after each chain
        sims = ex.tower.features(x, lens + 1) @ img.T - base                              # (C, n)
        sims = sims - sims.mean(1, keepdim=True)
        pearson = (sims @ target) / sims.norm(dim=1).clamp_min(1e-8)
        loss = -(fit_weight * pearson + prior_weight * logp).sum()
        opt.zero_grad()
        loss.backward(inputs=[theta])            # the offsets only: the bundle's prior and CLIP are shared, and frozen
        opt.step()
        with torch.no_grad():
            tok = y.argmax(-1)
            for c in range(chains):
                seen.add(tuple(int(ex.space.ids[t]) for t in tok[c, :lens[c]]))
    with torch.no_grad():
        y, _ = decode(False, 1.0)
        tok = y.argmax(-1)
        argmax_rows = [tuple(int(ex.space.ids[t]) for t in tok[c, :lens[c]]) for c in range(chains)]
    rows = with_prefixes(argmax_rows + list(seen))
    obj, _ = ex.fit_scores(p, rows, prior_weight)
    best = [rows[i] for i in np.argsort(-obj)[:max(keep, 20)]]
    out = ex.finish(p, best, "gumbel", prior_weight, keep)
    for e in out:
        e.extra["argmax"] = tuple(e.extra["ids"]) in set(argmax_rows)
    return out
