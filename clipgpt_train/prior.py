"""Train the caption prior: a GPT initialised from a CLIP text tower, on captions.

    python -m clipgpt_train.prior                      # the shipped prior (assets/shapes/prior)
    python -m clipgpt_train.prior --steps 20 --out /tmp/prior      # a smoke run
    # a pretrained CLIP's text tower, fine-tuned on your captions (a .txt file, one per line,
    # or a .parquet with a "caption" column), on as many GPUs as accelerate is given:
    accelerate launch -m clipgpt_train.prior --clip open_clip:ViT-B-32/laion2b_s34b_b79k \\
        --captions my_captions.parquet --out my_bundle/prior --lr 1e-4 --batch 256 --steps 20000

Written with accelerate, so the same script runs on a CPU, one GPU or several (each process
draws its own batches; gradients are averaged by accelerate).
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass

import torch

from clipgpt_core.models.caption_prior import CaptionPrior
from clipgpt_core.world.corpus import vocabulary, world_captions
from .loop import Resume, fit, read_captions, run_cli, write_train_record


@dataclass
class PriorTrainConfig:
    out: str = "assets/shapes/prior"
    clip: str = "shapes"        # the bundle whose CLIP text tower initialises the prior
    captions: str = ""          # a .txt / .parquet caption file; empty = ShapesWorld captions
    steps: int = 3000
    batch: int = 64
    lr: float = 1e-3
    min_lr: float = 5e-5
    warmup: int = 50
    weight_decay: float = 0.01
    untied_head: bool = False   # a separate output matrix instead of the token embedding
    seed: int = 0
    threads: int = 2
    log_every: int = 50
    checkpoint: str = "runs/train_prior"   # resumable state: run the same command again to continue


def train(cfg: PriorTrainConfig) -> CaptionPrior:
    from accelerate import Accelerator
    from clipgpt_core.bundle import load_bundle

    accelerator = Accelerator()
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    rng = random.Random(cfg.seed * 1000 + accelerator.process_index)
    corpus = read_captions(cfg.captions) if cfg.captions else None
    next_batch = (lambda: rng.choices(corpus, k=cfg.batch)) if corpus else (lambda: world_captions(rng, cfg.batch))

    prior = CaptionPrior.from_clip(load_bundle(cfg.clip, strict=False).clip, tie_head=not cfg.untied_head)
    gpt = prior.gpt.train()
    decay = [p for n, p in gpt.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    rest = [p for n, p in gpt.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": rest, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.98))
    gpt, opt = accelerator.prepare(gpt, opt)
    model = accelerator.unwrap_model(gpt)
    t0 = time.time()

    def step() -> float:
        tokens = prior.token_batch(next_batch()).to(accelerator.device)
        loss = gpt(tokens, loss=True)
        opt.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(gpt.parameters(), 1.0)
        opt.step()
        return loss.item()

    resume = Resume(cfg.checkpoint, {"prior": model}, rng) if accelerator.num_processes == 1 else None
    ema = fit(step, opt, cfg, "train prior", disable=not accelerator.is_main_process, resume=resume)
    accelerator.wait_for_everyone()
    prior = CaptionPrior(model.eval(), str(accelerator.device))
    writes = prior.token_ids(corpus if corpus else vocabulary())          # what it was trained to write
    if len(writes) < model.cfg.vocab_size // 2:
        model.restrict_writes(writes)
    if accelerator.is_main_process:
        prior.save(cfg.out)
        write_train_record(cfg.out, cfg, time.time() - t0, final_loss_ema=ema)
    return prior


def main(argv=None):
    run_cli(PriorTrainConfig, train, __doc__, argv)


if __name__ == "__main__":
    main()
