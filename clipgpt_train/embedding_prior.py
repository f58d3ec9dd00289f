"""Train the caption -> CLIP-image-embedding prior.

    python -m clipgpt_train.embedding_prior          # the shipped one (assets/shapes/embedding_prior)
    python -m clipgpt_train.embedding_prior --steps 20 --out /tmp/ep      # a smoke run
    python -m clipgpt_train.embedding_prior --residuals-only               # only (re)fit the sampling residuals

The CLIP stays frozen. Loss: contrastive (predicted embedding vs the batch's image embeddings,
with every image the caption is true of counted as a positive) plus cosine to the true image.
Then the sampling residuals: image embedding - predicted mean over `residual_pairs` fresh world pairs, fitted as
one Gaussian (mean, Cholesky factor of the covariance + a small ridge), so that EmbeddingPrior.sample can draw.
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from clipgpt_core.models.embedding_prior import EmbeddingPrior, EmbeddingPriorConfig, EmbeddingPriorNet
from .clip_losses import soft_ce
from .clip_facts import truth_matrix
from clipgpt_core.world.corpus import world_pairs
from .loop import Resume, fit, run_cli, write_train_record


@dataclass
class EmbeddingPriorTrainConfig:
    bundle: str = "shapes"
    out: str = "assets/shapes/embedding_prior"
    steps: int = 800
    batch: int = 128
    lr: float = 2e-3
    min_lr: float = 1e-4
    warmup: int = 50
    hidden: int = 512
    layers: int = 2
    cosine_weight: float = 1.0
    seed: int = 0
    threads: int = 2
    checkpoint: str = "runs/train_embedding_prior"   # resumable state: run the same command again to continue
    residual_pairs: int = field(default=4096, metadata={"keyed_when_set": True})
    residuals_only: bool = field(default=False, metadata={"keyed_when_set": True})  # refit out/'s residuals only


@torch.no_grad()
def fit_residuals(prior: EmbeddingPrior, rng: random.Random, n: int, batch: int = 256) -> dict[str, torch.Tensor]:
    """What world images add to their caption's predicted mean, as a Gaussian: {"mean": (D,), "scale_tril": (D, D)}."""
    rows = []
    for _ in tqdm(range(0, n, batch), desc="sampling residuals"):
        images, captions, _, _ = world_pairs(rng, batch)
        rows.append(prior.clip.encode_images(images) - prior.predict(captions))      # (B, D)
    r = torch.from_numpy(np.concatenate(rows)[:n]).double()
    mu = r.mean(0)
    cov = torch.cov(r.T) + 1e-5 * torch.eye(r.shape[1], dtype=torch.float64)
    return {"mean": mu.float(), "scale_tril": torch.linalg.cholesky(cov).float()}


def train(cfg: EmbeddingPriorTrainConfig) -> EmbeddingPrior:
    from clipgpt_core.bundle import load_bundle
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    rng = random.Random(cfg.seed)
    clip = load_bundle(cfg.bundle, strict=False).clip
    if cfg.residuals_only:
        prior = EmbeddingPrior.load(clip, cfg.out)
        prior.residuals = fit_residuals(prior, random.Random(cfg.seed + 1), cfg.residual_pairs)
        prior.save(cfg.out)
        return prior
    net = EmbeddingPriorNet(EmbeddingPriorConfig(clip.dim, cfg.hidden, cfg.layers))
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=0.01)
    t0 = time.time()

    def step() -> float:
        images, captions, scenes, descs = world_pairs(rng, cfg.batch)
        img = torch.from_numpy(clip.encode_images(images))                         # (B, D), frozen
        txt = torch.from_numpy(clip.encode_texts(captions))
        truth = torch.from_numpy(truth_matrix(descs, scenes)).float()              # caption i true of image j
        pred = net(txt)
        logits = net.logit_scale.exp() * pred @ img.T
        loss = (soft_ce(logits, truth) + soft_ce(logits.T, truth.T)) / 2
        loss = loss + cfg.cosine_weight * (1 - (pred * img).sum(-1)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            net.logit_scale.clamp_(0, 4.6)
        return loss.item()

    ema = fit(step, opt, cfg, "train embedding prior", resume=Resume(cfg.checkpoint, {"net": net}, rng))
    prior = EmbeddingPrior(clip, net.eval())
    prior.residuals = fit_residuals(prior, random.Random(cfg.seed + 1), cfg.residual_pairs)
    prior.save(cfg.out)
    write_train_record(cfg.out, cfg, time.time() - t0, final_loss_ema=ema)
    return prior


def main(argv=None):
    run_cli(EmbeddingPriorTrainConfig, train, __doc__, argv)


if __name__ == "__main__":
    main()
