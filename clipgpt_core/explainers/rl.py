"""Seed 000's second idea: choose t by reinforcement learning, the caption prior as the policy. A copy of the
prior samples a group of texts in the restricted vocabulary each step; each text is rewarded by

    reward(t) = rho_fit(f, CLIP_t) + prior_weight x log p_prior(t)      (- DISFLUENT_PENALTY below the fluency floor)

(search's objective, on the fit half only), and the copy follows REINFORCE with the group's rewards standardised
as advantages (GRPO's baseline; one gradient step a group, so its clipped ratio is 1) plus kl_weight x a per-token
KL(policy || prior) estimate that keeps it saying what the prior would. Every text sampled is kept; the best on the
fit half are ranked and held out like search's. TRL is not used: its trainers wrap Hugging Face causal LMs and
their tokenizers, and the prior is neither."""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from .problem import Explainer, Problem, Settings


@dataclass
class Config:
    group: int = 64             # texts sampled a step: the group whose rewards are standardised
    lr: float = 1e-3            # Adam, on the copy's transformer (its token embeddings stay the prior's)
    kl_weight: float = 0.02     # per-token KL(policy || prior) estimate (k3), against drifting into word salad
    temperature: float = 1.0    # of the policy's samples


def run(ex: Explainer, p: Problem, s: Settings, cfg: Config):
    torch.manual_seed(s.seed)
    gen = torch.Generator(device=ex.space.ids.device).manual_seed(s.seed)
    policy = copy.copy(ex.space)                        # the same vocabulary, over a trainable copy of the prior
    policy.gpt = copy.deepcopy(ex.prior.gpt).requires_grad_(True)
    policy.gpt.token_embedding.requires_grad_(False)
    opt = torch.optim.Adam([w for w in policy.gpt.parameters() if w.requires_grad], lr=cfg.lr)
    scored: dict[tuple, float] = {}
    curve = []
    for _ in tqdm(range(s.budget), desc="explain: rl", disable=not s.progress):
        rows = [r for r in policy.sample(cfg.group, cfg.temperature, gen, max_len=ex.max_len) if r]
        if len(rows) < 2:
            continue
        reward, _ = ex.fit_scores(p, rows, s.prior_weight)          # (G,) on the fit half
        scored.update(zip(rows, reward.tolist()))
        curve.append(float(reward.mean()))
        adv = torch.from_numpy((reward - reward.mean()) / (reward.std() + 1e-6)).float()
        logp, mask = policy.row_log_probs(rows)                      # (G, T) with grad
        with torch.no_grad():
            ref, _ = ex.space.row_log_probs(rows)
        d = (ref - logp) * mask
        kl = ((d.exp() - d - 1) * mask).sum(1)                       # k3 estimator, >= 0, per text
        loss = (-adv * logp.sum(1) + cfg.kl_weight * kl).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    rows = sorted(scored, key=scored.get, reverse=True)[:max(s.keep, 20)]
    out = ex.finish(p, rows, "rl", s.prior_weight, s.keep)
    for e in out:
        e.extra["reward_curve"] = [round(r, 4) for r in curve]     # mean reward of each step's group
    return out
