"""Train the built-in CLIP on ShapesWorld.

    python -m clipgpt_core.train_clip          # the shipped weights (assets/shapes/clip), ~65 min on 2 cores
    python -m clipgpt_core.train_clip --steps 20 --restart-steps 0 --binding-steps 0 --out /tmp/clip  # smoke run
    python -m clipgpt_core.train_clip --device cuda --steps 20000 --pairs 128          # a longer run on a GPU

Schedule: 2,400 steps of warm-up + cosine from lr 2e-3; a warm restart of 1,200 steps from 1e-3;
a binding stage of 600 steps from 5e-4 (more two-object scenes, half of whose partners swap two
objects' colours). Each stage starts a fresh optimizer and probe and a batch stream seeded by its
number, so a stage can run on its own from the previous one's result (`--resume DIR --start-stage N`)
and give the same weights as one run.

Recipe (seed 001's symmetric cross-entropy with a learned temperature, plus):
  * every batch is made of scene pairs: a scene and a copy with one attribute changed (a
    colour, shape, size, position, background, or two objects' colours swapped), each
    captioned so that the changed attribute is stated -> hard negatives on both sides;
  * one extra hard-negative caption per image (one stated fact made false) on the
    image->text side;
  * hard groups: half the pairs come in groups of 8 images sharing background and colour;
  * captions that happen to be true of other images in the batch count as positives
    (multi-positive targets from ground truth), so the loss never punishes a true match;
  * a training-only linear probe on the image embedding predicting the scene's facts (BCE);
  * random rendering styles (antialiasing, star/triangle/cross proportions, noise).
"""
from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from . import world
from .clip_model import ClipEncoder, create_clip
from .training import cosine_lr, run_cli, write_train_record


@dataclass
class TrainConfig:
    out: str = "assets/shapes/clip"
    model_name: str = "shapes-clip"
    steps: int = 2400
    pairs: int = 32              # batch = 2 * pairs images
    text_negatives: int = 1      # extra false captions per image (image->text side)
    lr: float = 2e-3
    min_lr: float = 1e-4
    warmup: int = 150
    weight_decay: float = 0.05
    object_mix: tuple = (0.55, 0.3, 0.1, 0.05)  # share of scenes with 1..4 objects
    aux_weight: float = 1.0      # weight of the ground-truth fact probe on the image embedding
    group_share: float = 0.5     # share of pairs drawn in groups that share background and colour
    group_size: int = 4          # pairs per group (so 8 images tell apart only by shape/size/place)
    seed: int = 0
    threads: int = 2
    device: str = "cpu"          # "cuda" on a machine with a GPU
    log_every: int = 50
    save_every: int = 400
    restart_steps: int = 1200    # a second cosine cycle (warm restart) after `steps`; 0 = none
    restart_lr: float = 1e-3
    binding_steps: int = 600     # a third cycle that stresses binding: more two-object scenes whose
    binding_lr: float = 5e-4     # partner swaps two objects' colours (binding_swap_share of pairs)
    binding_swap_share: float = 0.5
    binding_object_mix: tuple = (0.25, 0.55, 0.15, 0.05)
    swap_share: float = 0.0      # share of multi-object pairs whose edit is a colour swap (stage 3 sets it)
    resume: str = ""             # a saved component directory to start from
    start_stage: int = 1         # 2 = skip stage 1 (with --resume pointing at its result)
    stop_after: int = 0          # stop (and save) after this many steps in all, keeping the schedule


def make_batch(rng: random.Random, cfg: TrainConfig):
    """-> images (list of PIL), captions (B), negatives (B*K captions), truth (B, B) bool."""
    scenes, descs = [], []
    group_left, group = 0, None
    while len(scenes) < 2 * cfg.pairs:
        n = rng.choices([1, 2, 3, 4], weights=cfg.object_mix)[0]
        if group_left == 0 and cfg.group_share > 0 and rng.random() < cfg.group_share:
            group_left = cfg.group_size
            bg = rng.choice(list(world.BACKGROUNDS))
            group = (bg, rng.choice([c for c in world.COLOURS if c != bg]))
        if group_left > 0:
            bg, colour = group
            first = (colour, rng.choice([s for s in world.SHAPES if world.split_allows(colour, s, "train")]))
            kinds = [first] + [world.sample_object_kind(rng, bg, "train") for _ in range(n - 1)]
            scene = world.sample_scene(rng, kinds=kinds, background=bg)
            group_left -= 1
        else:
            scene = world.sample_scene(rng, n_objects=n, split="train")
        force = "swap" if n > 1 and cfg.swap_share and rng.random() < cfg.swap_share else None
        edit = world.edited_scene(scene, rng, split="train", choice=force)
        if edit is None:
            continue
        partner, attr = edit
        for s in (scene, partner):
            scenes.append(s)
            descs.append(world.describe(s, rng, must_state={attr}))
    images = [world.render(s, rng, world.RenderStyle.random(rng)) for s in scenes]
    captions = [world.caption_text(d, rng) for d in descs]
    negs = []
    for d, s, cap in zip(descs, scenes, captions):
        found = world.negatives(d, s, rng, n=cfg.text_negatives)
        found += [None] * (cfg.text_negatives - len(found))
        negs += [world.caption_text(x, rng) if x else cap for x in found]
    truth = truth_matrix(descs, scenes)
    neg_valid = [n != c for n, c in zip(negs, np.repeat(captions, cfg.text_negatives))]
    return images, captions, negs, truth, neg_valid, np.stack([scene_facts(s) for s in scenes])


FACTS = ([f"shape:{v}" for v in world.SHAPES] + [f"colour:{v}" for v in world.COLOURS]
         + [f"size:{v}" for v in world.SIZES] + [f"position:{v}" for v in world.POSITIONS]
         + [f"background:{v}" for v in world.BACKGROUNDS] + [f"count:{n}" for n in (1, 2, 3, 4)])


def scene_facts(scene) -> np.ndarray:
    """Multi-hot ground truth: which shapes, colours, sizes, positions occur; background; count."""
    on = {f"background:{scene.background}", f"count:{len(scene.objects)}"}
    for o in scene.objects:
        on |= {f"shape:{o.shape}", f"colour:{o.colour}", f"size:{o.size}", f"position:{o.position}"}
    return np.array([f in on for f in FACTS], dtype=np.float32)


def truth_matrix(descs, scenes) -> np.ndarray:
    """truth[i, j] = caption i is true of scene j (ground truth, not the model)."""
    b = len(scenes)
    truth = np.eye(b, dtype=bool)
    n_objs = [len(s.objects) for s in scenes]
    for i, d in enumerate(descs):
        wanted = d.count if d.count else len(d.phrases)
        for j in range(b):
            if i != j and n_objs[j] == wanted and d.background in (None, scenes[j].background):
                truth[i, j] = world.is_true(d, scenes[j])
    return truth


def images_to_tensor(images, mean, std) -> torch.Tensor:
    x = torch.from_numpy(np.stack([np.asarray(im) for im in images])).float().div_(255)
    x = x.permute(0, 3, 1, 2)  # (B, 3, 64, 64)
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def soft_ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    targets = targets / targets.sum(dim=1, keepdim=True)
    return -(targets * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def clip_loss(clip: ClipEncoder, img_raw, tokens, neg_tokens, truth, neg_valid):
    model = clip.model
    img = F.normalize(img_raw, dim=-1)                                     # (B, D)
    txt = F.normalize(model.encode_text(torch.cat([tokens, neg_tokens])), dim=-1)
    b = img.shape[0]
    scale = model.logit_scale.exp()
    logits = scale * img @ txt.T                                           # (B, B + B*K)
    # image -> text: targets over batch captions that are true of the image; hard negatives
    # of *other* images are ordinary negatives, invalid (empty) negatives are masked out
    t_i2t = torch.cat([truth.T.float(), truth.new_zeros(b, logits.shape[1] - b, dtype=torch.float)], dim=1)
    mask = torch.cat([truth.new_zeros(b, b), ~neg_valid.view(1, -1).expand(b, -1)], dim=1)
    loss_i = soft_ce(logits.masked_fill(mask, -1e4), t_i2t)
    # text -> image: each batch caption against all images
    loss_t = soft_ce(logits[:, :b].T, truth.float())
    return (loss_i + loss_t) / 2


def train(cfg: TrainConfig) -> ClipEncoder:
    """Stage 1: `steps` steps of a warm-up + cosine schedule from `lr`. Stage 2 (restart_steps > 0):
    a warm restart (SGDR) of `restart_steps` from `restart_lr`. Stage 3 (binding_steps > 0): another
    restart whose batches stress binding. Each stage starts a fresh optimizer, probe and batch stream
    (seeded seed + stage - 1), so `--start-stage N --resume DIR` continues a finished stage N-1
    exactly as one uninterrupted run would."""
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    if cfg.resume:
        from .clip_model import load_clip
        clip = load_clip(cfg.resume, device=cfg.device)
    else:
        clip = create_clip(cfg.model_name, device=cfg.device)
    model = clip.model.train()
    binding = {"swap_share": cfg.binding_swap_share, "object_mix": cfg.binding_object_mix}
    stages = [(n, lr, extra) for n, lr, extra in ((cfg.steps, cfg.lr, {}), (cfg.restart_steps, cfg.restart_lr, {}),
                                                  (cfg.binding_steps, cfg.binding_lr, binding)) if n]
    total = sum(n for n, _, _ in stages)
    last = min(total, cfg.stop_after or total)
    done = sum(n for n, _, _ in stages[:cfg.start_stage - 1])
    bar = tqdm(total=last, initial=done, desc="train clip", dynamic_ncols=True)
    out, t0, ema = Path(cfg.out), time.time(), None
    for stage, (steps, lr, extra) in enumerate(stages, start=1):
        if stage < cfg.start_stage:
            continue
        stage_cfg = replace(cfg, **extra)
        if stage > 1:
            torch.manual_seed(cfg.seed + stage - 1)
        rng = random.Random(cfg.seed + stage - 1)
        probe, opt = _probe_and_optimizer(model, clip.dim, cfg)
        for step in range(steps):
            if done >= last:
                break
            for g in opt.param_groups:
                g["lr"] = cosine_lr(step, steps, lr, cfg.warmup, cfg.min_lr)
            loss = _step(clip, probe, opt, make_batch(rng, stage_cfg), cfg)
            done += 1
            ema = loss if ema is None else 0.95 * ema + 0.05 * loss
            bar.update(1)
            bar.set_postfix(stage=stage, loss=f"{ema:.3f}", scale=f"{clip.logit_scale:.1f}")
            if done % cfg.save_every == 0 or done == last:
                model.eval()
                clip.save(out)
                write_train_record(out, cfg, t0, completed_steps=done, final_loss_ema=ema)
                model.train()
    bar.close()
    model.eval()
    return clip


def _probe_and_optimizer(model, dim: int, cfg: TrainConfig):
    # Training-only probe: the image embedding must linearly tell the scene's facts. Contrastive
    # learning alone left shape at chance for 1000+ steps on this CPU budget (the text tower learns
    # to ignore shape words while images carry no shape feature, and vice versa); direct ground
    # truth breaks that tie. The probe is not part of the saved model.
    probe = torch.nn.Linear(dim, len(FACTS)).to(cfg.device)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW([{"params": decay + [probe.weight], "weight_decay": cfg.weight_decay},
                             {"params": no_decay + [probe.bias], "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.98))
    return probe, opt


def _step(clip: ClipEncoder, probe, opt, batch, cfg: TrainConfig) -> float:
    images, captions, negs, truth, neg_valid, facts = batch
    model, dev = clip.model, cfg.device
    pp = model.visual.preprocess_cfg
    img_raw = model.encode_image(images_to_tensor(images, pp["mean"], pp["std"]).to(dev))
    loss = clip_loss(clip, img_raw, clip.tokenizer(captions).to(dev), clip.tokenizer(negs).to(dev),
                     torch.from_numpy(truth).to(dev), torch.tensor(neg_valid).to(dev))
    if cfg.aux_weight:
        loss = loss + cfg.aux_weight * F.binary_cross_entropy_with_logits(
            probe(F.normalize(img_raw, dim=-1) * 10), torch.from_numpy(facts).to(dev))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    with torch.no_grad():
        model.logit_scale.clamp_(0, math.log(100))
    return loss.item()


def main(argv=None):
    run_cli(TrainConfig, train, __doc__, argv)


if __name__ == "__main__":
    main()
