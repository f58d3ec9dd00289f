"""Train the built-in CLIP (v2) on ShapesWorld.

    python -m clipgpt_train.clip                 # the shipped weights (assets/shapes/clip); resumes by itself
    python -m clipgpt_train.clip --steps 20 --out /tmp/clip --checkpoint /tmp/clip-ckpt    # smoke run
    python -m clipgpt_train.clip --device cuda --steps 20000 --pairs 128                  # longer, on a GPU

Interrupt it at any point and run the same command again: it continues from the last checkpoint
(`--checkpoint`, every `--save-every` steps: weights, optimizer moments, step and RNG states) and ends
with the same weights, bit for bit, as an uninterrupted run. `--fresh` ignores a checkpoint.

Why each part of the recipe is there (what v1 lost and how v2 got it back, with the probes that showed it):
docs/results.md, "CLIP (built-in v2): how the recipe was found".

Recipe kept from v1 (seed 001's symmetric cross-entropy with a learned temperature, plus):
  * every batch is made of scene pairs: a scene and a copy with one attribute changed (a
    colour, shape, size, position, background, or two objects' colours swapped), each
    captioned so that the changed attribute is stated -> hard negatives on both sides;
  * one extra hard-negative caption per image (one stated fact made false) on the image->text side;
  * hard groups: half the pairs come in groups of 8 images sharing background and colour;
  * captions that happen to be true of other images in the batch count as positives
    (multi-positive targets from ground truth), so the loss never punishes a true match;
  * random rendering styles (antialiasing, star/triangle/cross proportions, noise).
"""
from __future__ import annotations

import copy
import math
import random
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from clipgpt_core import world
from clipgpt_core.models.clip import ClipEncoder, create_clip, is_text_tower, load_clip
from clipgpt_core.errors import InputError
from .clip_facts import scene_facts, stated_facts, states_only_train_pairs, truth_matrix
from .clip_losses import AuxHeads, aux_losses, clip_loss, images_to_tensor
from .loop import Resume, fit, run_cli, run_key, write_train_record


@dataclass
class TrainConfig:
    out: str = "assets/shapes/clip"
    checkpoint: str = "runs/train_clip"   # resumable state, every save_every steps
    fresh: bool = False          # ignore a checkpoint in `checkpoint` and start over
    model_name: str = "shapes-clip-v2"
    text_from: str = ""          # a saved CLIP whose text tower to start from ("" = random init)
    freeze_text: bool = False    # keep that text tower as it is (then the prior and renderer stay valid)
    steps: int = 5000
    pretrain_steps: int = 600    # the first steps: each tower learns ground truth alone (see _pretrain_step)
    lr: float = 2e-3
    min_lr: float = 5e-5
    warmup: int = 150
    pairs: int = 32              # batch = 2 * pairs images
    text_negatives: int = 1      # extra false captions per image (image->text side)
    weight_decay: float = 0.05
    object_mix: tuple = (0.3, 0.25, 0.25, 0.2)   # share of scenes with 1..4 objects
    same_shape_share: float = 0.2   # multi-object scenes whose objects all share one shape (count captions)
    swap_share: float = 0.3      # multi-object pairs whose partner swaps two objects' colours
    group_share: float = 0.5     # share of pairs drawn in groups that share background and colour
    group_size: int = 4          # pairs per group (so 8 images tell apart only by shape/size/place)
    aux_weight: float = 1.0      # the ground-truth fact probe on the image embedding
    trunk_weight: float = 2.0    # the same facts probed from the image tower's pooled features
    text_probe_weight: float = 1.0  # the facts a caption states, probed from its text embedding
    presence_weight: float = 1.0  # "a {shape}" / "a {colour} ..." presence, read through CLIP text
    count_weight: float = 0.5    # "one/two/three/four {shape}s" on one-shape scenes
    binding_weight: float = 1.0  # listing vs the listing with two colours swapped
    seed: int = 0
    threads: int = 2
    device: str = "cpu"          # "cuda" on a machine with a GPU
    save_every: int = 100
    stop_after: int = 0          # stop (checkpoint and save) after this many steps in all, keeping the schedule
    # a second stage (position_stage): the image tower learns where objects are in scenes of several objects
    # as CLIP's own text states it, its text tower frozen so that the prior and the renderer stay valid
    position_weight: float = 0.0          # the position-presence loss; the first stage leaves it off
    position_stage_steps: int = 1500      # 0: none
    position_stage_lr: float = 1e-3
    position_stage_weight: float = 3.0
    position_stage_trunk: bool = False    # also train the convolutions (False: attention pool and projection)
    position_stage_anchor: float = 10.0   # x (1 - cos) to the first stage's image embedding: keeps what it read
    from_clip: str = ""                   # a saved CLIP that is this recipe's first stage: run the second only
    # sizes bound to colour and shape (docs/results.md "Binding through the vector"):
    size_swap_share: float = 0.3   # multi-object pairs whose partner trades two objects' sizes (stated; the extra
    # false captions then trade sizes too)
    size_conjunctions: bool = True  # presence of "a large red star" (and "a large star", averaged over colours) and
    # a size-swapped listing in the binding loss
    # benchmark-only variants (docs/results.md "Binding through the vector"); keyed only when set
    edited_partners: bool = field(default=True, metadata={"keyed_when_set": True})  # False: each scene's partner
    # is an independent scene (no hard negatives; pair with --text-negatives 0 --binding-weight 0 --group-share 0)


# ----------------------------------------------------------------------------- data
def sample_training_scene(rng: random.Random, cfg: TrainConfig, group) -> world.Scene:
    n = rng.choices([1, 2, 3, 4], weights=cfg.object_mix)[0]
    bg = group[0] if group else rng.choice(list(world.BACKGROUNDS))
    kinds = [world.sample_object_kind(rng, bg, "train") for _ in range(n)]
    if group:   # the first object has the group's colour
        kinds[0] = (group[1], rng.choice([s for s in world.SHAPES if world.split_allows(group[1], s, "train")]))
    if n > 1 and rng.random() < cfg.same_shape_share:
        shape = kinds[0][1]
        kinds = [kinds[0]] + [(rng.choice([c for c in world.COLOURS if c != bg
                                           and world.split_allows(c, shape, "train")]), shape)
                              for _ in range(n - 1)]
    return world.sample_scene(rng, kinds=kinds, background=bg)


def make_batch(rng: random.Random, cfg: TrainConfig):
    """-> images (list of PIL), captions (B), negatives (B*K captions), truth (B, B) bool, negative
    validity (B*K), facts (B, len(FACTS)), scenes (B), the facts each caption states (B, len(FACTS))."""
    scenes, descs = [], []
    group_left, group = 0, None
    while len(scenes) < 2 * cfg.pairs:
        if group_left == 0 and cfg.group_share > 0 and rng.random() < cfg.group_share:
            group_left = cfg.group_size
            bg = rng.choice(list(world.BACKGROUNDS))
            group = (bg, rng.choice([c for c in world.COLOURS if c != bg]))
        scene = sample_training_scene(rng, cfg, group if group_left > 0 else None)
        group_left = max(0, group_left - 1)
        if not cfg.edited_partners:
            for s in (scene, sample_training_scene(rng, cfg, None)):
                scenes.append(s)
                descs.append(world.describe(s, rng))
            continue
        u = rng.random() if len(scene.objects) > 1 else 1.0
        force = "size_swap" if u < cfg.size_swap_share else "swap" if u < cfg.size_swap_share + cfg.swap_share else None
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
        # a held-out pair must not occur in training text either: stated only in negatives, "a red star"
        # was pushed away from every image, and the CLIP read red stars as anything but red (0.00)
        swaps = ("colour", "shape", "size") if cfg.size_swap_share else ("colour", "shape")
        found = [x for x in world.negatives(d, s, rng, n=cfg.text_negatives + 4, swaps=swaps)
                 if states_only_train_pairs(x)]
        found = found[:cfg.text_negatives] + [None] * (cfg.text_negatives - len(found[:cfg.text_negatives]))
        negs += [world.caption_text(x, rng) if x else cap for x in found]
    truth = truth_matrix(descs, scenes)
    neg_valid = [n != c for n, c in zip(negs, np.repeat(captions, cfg.text_negatives))]
    return (images, captions, negs, truth, neg_valid, np.stack([scene_facts(s) for s in scenes]), scenes,
            np.stack([stated_facts(d) for d in descs]))


# ----------------------------------------------------------------------------- training
def build_model(cfg: TrainConfig) -> ClipEncoder:
    """The architecture at random init (seeded), its text tower copied from `text_from` and frozen."""
    torch.manual_seed(cfg.seed)
    clip = create_clip(cfg.model_name, device=cfg.device)
    if cfg.text_from:
        source = load_clip(cfg.text_from, device=cfg.device).model.state_dict()
        text = {k: v for k, v in source.items() if not k.startswith("visual.")}
        missing, _ = clip.model.load_state_dict(text, strict=False)
        if any(not k.startswith("visual.") for k in missing):
            raise InputError(f"{cfg.text_from} has no text tower of {cfg.model_name}'s shape")
    if cfg.freeze_text:
        for name, p in clip.model.named_parameters():
            p.requires_grad_(not is_text_tower(name))
    return clip


def make_optimizer(model, heads, cfg: TrainConfig):
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    head_decay = ("probe.weight", "trunk_probe.weight", "text_probe.weight")
    decay = [p for n, p in params if p.ndim >= 2 and "embedding" not in n]
    decay += [p for n, p in heads.named_parameters() if n in head_decay]
    no_decay = [p for n, p in params if not (p.ndim >= 2 and "embedding" not in n)]
    no_decay += [p for n, p in heads.named_parameters() if n not in head_decay]
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.98))


def train(cfg: TrainConfig) -> ClipEncoder:
    """One warm-up + cosine schedule of `steps`, then the position stage, each checkpointed every `save_every`
    steps; a run restarted with the same config continues from its checkpoint exactly. With `from_clip`, that
    saved CLIP stands for the first stage and only the position stage runs."""
    torch.set_num_threads(cfg.threads)
    first = 0 if cfg.from_clip else cfg.steps                       # steps before the position stage
    if cfg.from_clip:
        clip, seconds, ema = load_clip(cfg.from_clip, device=cfg.device), 0.0, None
    else:
        clip, seconds, ema = first_stage(cfg)
    if cfg.position_stage_steps and (not cfg.stop_after or cfg.stop_after > first):
        more, ema = position_stage(clip, replace(cfg, stop_after=cfg.stop_after - first if cfg.stop_after else 0))
        seconds += more
    clip.model.eval()
    clip.save(cfg.out)
    write_train_record(cfg.out, cfg, seconds, final_loss_ema=ema,
                       completed_steps=min(first + cfg.position_stage_steps, cfg.stop_after or 10 ** 9),
                       text_fingerprint=clip.fingerprint("text"), fingerprint=clip.fingerprint())
    return clip


def first_stage(cfg: TrainConfig) -> tuple[ClipEncoder, float, float]:
    """The CLIP from scratch -> (clip, seconds spent, smoothed final loss)."""
    clip = build_model(cfg)
    model = clip.model.train()
    heads = AuxHeads(clip.dim, trunk_dim(model, clip.dim), cfg.size_conjunctions).to(cfg.device)
    opt = make_optimizer(model, heads, cfg)
    rng = random.Random(cfg.seed)
    if cfg.fresh:
        shutil.rmtree(cfg.checkpoint, ignore_errors=True)
    # the first stage's checkpoint is valid whatever the second stage's settings
    key = {k: v for k, v in run_key(cfg).items() if not k.startswith(("position_stage_", "from_clip"))}
    resume = Resume(cfg.checkpoint, {"model": model, "heads": heads}, rng, every=cfg.save_every, key=key)

    def step(i: int) -> float:
        batch = make_batch(rng, cfg)
        if i < cfg.pretrain_steps:
            return _pretrain_step(clip, heads, opt, batch, cfg)
        return _step(clip, heads, opt, batch, rng, cfg)
    ema = fit(step, opt, cfg, "train clip", resume=resume, pass_step=True)
    return clip, resume.seconds, ema


def position_stage(clip: ClipEncoder, cfg: TrainConfig) -> tuple[float, float]:
    """Position presence ("a {shape} in the {position}" averaged over shapes, centred) beside the whole
    first-stage recipe, on the image side only: the text tower (what the prior and renderer read) is frozen, and
    unless position_stage_trunk the convolutions too, run as at inference, so the pooling is what learns; the
    embedding is held near the first stage's (position_stage_anchor). Fresh heads, optimizer and seeds: it
    runs the same after the first stage or on a saved copy (from_clip). -> (seconds spent, smoothed final loss)."""
    stage = replace(cfg, steps=cfg.position_stage_steps, lr=cfg.position_stage_lr, pretrain_steps=0,
                    warmup=min(cfg.warmup, cfg.position_stage_steps // 5 or 1),
                    position_weight=cfg.position_stage_weight)
    torch.manual_seed(cfg.seed + 2)
    model = clip.model.train()
    trunk = getattr(model.visual, "trunk", None)
    frozen = set() if cfg.position_stage_trunk or not hasattr(trunk, "features") else \
        {f"visual.trunk.features.{n}" for n, _ in trunk.features.named_parameters()}
    for name, p in model.named_parameters():
        p.requires_grad_(not is_text_tower(name) and name not in frozen)
    if frozen:
        trunk.features.eval()             # batch norm as at inference: its running statistics stay as they are
    heads = AuxHeads(clip.dim, trunk_dim(model, clip.dim), cfg.size_conjunctions).to(cfg.device)
    anchor = copy.deepcopy(model.visual).eval().requires_grad_(False) if cfg.position_stage_anchor else None
    opt, rng = make_optimizer(model, heads, stage), random.Random(cfg.seed + 2)
    resume = Resume(str(Path(cfg.checkpoint) / "position_stage"), {"model": model, "heads": heads}, rng,
                    every=cfg.save_every, key=run_key(replace(cfg, from_clip="")))
    ema = fit(lambda: _step(clip, heads, opt, make_batch(rng, stage), rng, stage, anchor), opt, stage,
              "position stage", resume=resume)
    return resume.seconds, ema


def tower_features(model, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """-> the tower's pooled features (B, F) and the image embedding (B, D), unnormalised. For a timm
    tower (ours) the features are the trunk's output before open_clip's projection; for other
    towers, the embedding itself."""
    visual = model.visual
    if hasattr(visual, "trunk"):
        trunk = visual.trunk(x)
        return trunk, visual.head(trunk)
    img = model.encode_image(x)
    return img, img


def trunk_dim(model, dim: int) -> int:
    return getattr(getattr(model.visual, "trunk", None), "num_features", dim)


def _pretrain_step(clip: ClipEncoder, heads, opt, batch, cfg: TrainConfig) -> float:
    """Before the towers are asked to agree, each learns ground truth alone: the image tower the
    scene's facts (trunk probe), the text tower what its caption states (text probe). Contrastive
    learning from scratch learns shape last: at 1,200 steps of the full recipe, the trunk read
    circle/star/cross/diamond presence in 3-object scenes at 0.66-0.74 and the text embedding their
    mention at 0.63-0.75, while colour and count were already right; the tower alone, asked for the
    facts, reads shapes at 0.99 in 400 steps."""
    images, captions, _, _, _, facts, _, stated = batch
    model, dev = clip.model, cfg.device
    pp = model.visual.preprocess_cfg
    trunk, _ = tower_features(model, images_to_tensor(images, pp["mean"], pp["std"]).to(dev))
    txt = F.normalize(model.encode_text(clip.tokenizer(captions).to(dev)), dim=-1)
    loss = F.binary_cross_entropy_with_logits(heads.trunk_probe(trunk), torch.from_numpy(facts).to(dev))
    if not cfg.freeze_text:
        loss = loss + F.binary_cross_entropy_with_logits(heads.text_probe(txt * 10), torch.from_numpy(stated).to(dev))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
    opt.step()
    return loss.item()


def _step(clip: ClipEncoder, heads, opt, batch, rng, cfg: TrainConfig, anchor=None) -> float:
    images, captions, negs, truth, neg_valid, _, scenes, stated = batch
    model, dev = clip.model, cfg.device
    pp = model.visual.preprocess_cfg
    x = images_to_tensor(images, pp["mean"], pp["std"]).to(dev)
    trunk, img_raw = tower_features(model, x)
    loss, txt = clip_loss(clip, img_raw, clip.tokenizer(captions).to(dev), clip.tokenizer(negs).to(dev),
                          torch.from_numpy(truth).to(dev), torch.tensor(neg_valid, dtype=torch.bool).to(dev),
                          return_text=True)
    if cfg.text_probe_weight:
        loss = loss + cfg.text_probe_weight * F.binary_cross_entropy_with_logits(
            heads.text_probe(txt * 10), torch.from_numpy(stated).to(dev))
    img = F.normalize(img_raw, dim=-1)
    loss = loss + aux_losses(clip, heads, img, trunk, scenes, rng, cfg, dev)
    if anchor is not None:
        with torch.no_grad():
            kept = F.normalize(anchor(x), dim=-1)          # a frozen image tower's: held near it
        loss = loss + cfg.position_stage_anchor * (1 - (img * kept).sum(-1)).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
    opt.step()
    with torch.no_grad():
        model.logit_scale.clamp_(0, math.log(100))
    return loss.item()


def main(argv=None):
    run_cli(TrainConfig, train, __doc__, argv)


if __name__ == "__main__":
    main()
