"""Train the ClipCap mapper (CLIP image embedding -> prefix of the frozen caption prior).

    python -m clipgpt_core.train_captioner                 # the shipped captioner (assets/shapes/captioner)
    python -m clipgpt_core.train_captioner --steps 20 --out /tmp/captioner     # a smoke run

Needs a bundle with a CLIP and a prior (train the prior first). Images are rendered on the fly
in random styles; the CLIP and the prior stay frozen, so only the small mapper learns.
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass

import torch

from .captioner import MapperConfig, PrefixMapper
from .training import fit, run_cli, world_pairs, write_train_record


@dataclass
class CaptionerTrainConfig:
    bundle: str = "shapes"
    out: str = "assets/shapes/captioner"
    steps: int = 800
    batch: int = 32
    lr: float = 2e-3
    min_lr: float = 1e-4
    warmup: int = 50
    prefix_length: int = 4
    hidden: int = 512
    noise: float = 0.02        # Gaussian noise on the image embedding (CapDec): robustness to new renderers
    seed: int = 0
    threads: int = 2


def train(cfg: CaptionerTrainConfig) -> PrefixMapper:
    from .bundle import load_bundle
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    rng = random.Random(cfg.seed)
    bundle = load_bundle(cfg.bundle)
    if bundle.prior is None:
        raise SystemExit(f"bundle {cfg.bundle} has no prior: run python -m clipgpt_core.train_prior first")
    clip, prior = bundle.clip, bundle.prior
    for p in prior.gpt.parameters():
        p.requires_grad_(False)
    mapper = PrefixMapper(MapperConfig(clip.dim, prior.cfg.width, cfg.prefix_length, cfg.hidden))
    opt = torch.optim.AdamW(mapper.parameters(), lr=cfg.lr, weight_decay=0.01)
    room = prior.cfg.context_length - cfg.prefix_length
    t0 = time.time()

    def step() -> float:
        images, captions, _, _ = world_pairs(rng, cfg.batch)
        # captions that would not fit after the prefix are dropped, not cut: a cut caption would
        # teach the captioner to stop mid-sentence
        keep = [i for i, c in enumerate(captions) if len(prior.encode(c)) + 2 <= room]
        emb = torch.from_numpy(clip.encode_images([images[i] for i in keep]))   # (B, D), frozen
        emb = torch.nn.functional.normalize(emb + cfg.noise * torch.randn_like(emb), dim=-1)
        tokens = prior.token_batch([captions[i] for i in keep])
        loss = prior.gpt(tokens, mapper(emb), loss=True)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    ema = fit(step, opt, cfg, "train captioner")
    mapper.eval().save(cfg.out)
    write_train_record(cfg.out, cfg, t0, final_loss_ema=ema)
    return mapper


def main(argv=None):
    run_cli(CaptionerTrainConfig, train, __doc__, argv)


if __name__ == "__main__":
    main()
