"""Train the ClipCap captioner: a mapper (CLIP image embedding -> prefix) and, with --tune-prior
(the default), the prior's blocks fine-tuned with it (ClipCap's fine-tuned-GPT variant).

    python -m clipgpt_train.captioner                 # a ClipCap captioner for the built-in CLIP (runs/captioner; the
                                                      # bundle's captioner is CLIP-GPT's since it measured better)
    python -m clipgpt_train.captioner --steps 20 --out /tmp/captioner     # a smoke run

Needs a bundle with a CLIP and a prior (train the prior first). Images are rendered on the fly
in random styles. The CLIP stays frozen, and so do the prior itself and the token embedding the
decoder shares with it: the mapper learns, and the decoder's blocks at a lower rate. Runs on a
GPU when there is one (--device).
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass

import torch

from clipgpt_core.models.captioner import Captioner, MapperConfig, PrefixMapper, decoder_from_prior
from clipgpt_core.world.corpus import world_pairs
from .loop import Resume, fit, run_cli, write_train_record


@dataclass
class CaptionerTrainConfig:
    bundle: str = "shapes"
    out: str = "runs/captioner"
    steps: int = 3000
    batch: int = 64
    lr: float = 2e-3
    min_lr: float = 1e-4
    warmup: int = 100
    prefix_length: int = 4
    hidden: int = 512
    noise: float = 0.02        # Gaussian noise on the image embedding (CapDec): robustness to new renderers
    tune_prior: bool = True    # fine-tune the decoder's blocks with the mapper
    object_mix: tuple = (0.35, 0.35, 0.2, 0.1)   # shares of scenes with 1..4 objects
    state_colour: bool = True  # train on captions that give every object its colour: a caption that names
                               # "a cross and a green square" says less than the image shows
    prior_lr_scale: float = 0.25
    seed: int = 0
    threads: int = 2
    device: str = "auto"       # auto: cuda when there is one
    checkpoint: str = "runs/train_captioner"   # resumable state: run the same command again to continue


def train(cfg: CaptionerTrainConfig) -> Captioner:
    from clipgpt_core.bundle import load_bundle
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    rng = random.Random(cfg.seed)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
    bundle = load_bundle(cfg.bundle, device=device, strict=False)   # its old captioner may be stale
    if bundle.prior is None:
        raise SystemExit(f"bundle {cfg.bundle} has no prior: run python -m clipgpt_train.prior first")
    clip, prior = bundle.clip, bundle.prior
    prior.gpt.requires_grad_(False)
    decoder = decoder_from_prior(prior) if cfg.tune_prior else prior
    mapper = PrefixMapper(MapperConfig(clip.dim, prior.cfg.width, cfg.prefix_length, cfg.hidden)).to(device)
    groups = [{"params": list(mapper.parameters())}]
    if cfg.tune_prior:
        tuned = [p for n, p in decoder.gpt.named_parameters() if n != "token_embedding.weight"]
        for p in tuned:
            p.requires_grad_(True)
        groups.append({"params": tuned, "lr_scale": cfg.prior_lr_scale})
    opt = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=0.01)
    room = prior.cfg.context_length - cfg.prefix_length
    t0 = time.time()

    def step() -> float:
        images, captions, _, _ = world_pairs(rng, cfg.batch, object_mix=cfg.object_mix,
                                             must_state=frozenset({"colour"}) if cfg.state_colour else frozenset())
        # captions that would not fit after the prefix are dropped, not cut: a cut caption would
        # teach the captioner to stop mid-sentence
        keep = [i for i, c in enumerate(captions) if len(prior.encode(c)) + 2 <= room]
        emb = torch.from_numpy(clip.encode_images([images[i] for i in keep])).to(device)   # (B, D), frozen
        emb = torch.nn.functional.normalize(emb + cfg.noise * torch.randn_like(emb), dim=-1)
        tokens = prior.token_batch([captions[i] for i in keep])
        decoder.gpt.train(cfg.tune_prior)
        loss = decoder.gpt(tokens, mapper(emb), loss=True)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    ema = fit(step, opt, cfg, "train captioner",
              resume=Resume(cfg.checkpoint, {"mapper": mapper, "decoder": decoder.gpt}, rng))
    decoder.gpt.eval().requires_grad_(False)
    captioner = Captioner(clip, prior, mapper.eval(), decoder=decoder)
    captioner.save(cfg.out)
    write_train_record(cfg.out, cfg, time.time() - t0, final_loss_ema=ema)
    return captioner


def main(argv=None):
    run_cli(CaptionerTrainConfig, train, __doc__, argv)


if __name__ == "__main__":
    main()
