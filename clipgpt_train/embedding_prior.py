"""Train the caption -> CLIP-image-embedding prior.

    python -m clipgpt_train.embedding_prior          # the shipped one (assets/shapes/embedding_prior)
    python -m clipgpt_train.embedding_prior --steps 20 --out /tmp/ep      # a smoke run

The CLIP stays frozen. Loss: contrastive (predicted embedding vs the batch's image embeddings,
with every image the caption is true of counted as a positive) plus cosine to the true image.
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass

import torch

from clipgpt_core.models.embedding_prior import EmbeddingPrior, EmbeddingPriorConfig, EmbeddingPriorNet
from .clip import soft_ce
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


def train(cfg: EmbeddingPriorTrainConfig) -> EmbeddingPrior:
    from clipgpt_core.bundle import load_bundle
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    rng = random.Random(cfg.seed)
    clip = load_bundle(cfg.bundle, strict=False).clip
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
    prior.save(cfg.out)
    write_train_record(cfg.out, cfg, t0, final_loss_ema=ema)
    return prior


def main(argv=None):
    run_cli(EmbeddingPriorTrainConfig, train, __doc__, argv)


if __name__ == "__main__":
    main()
